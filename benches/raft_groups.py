#!/usr/bin/env python3
"""How manifest-PUT throughput would grow if meta were split into several Raft groups by namespace
(docs/partitioned-meta.md). A capacity model, not a guess: it takes the CPU a manifest PUT costs
each role, as `benches/scale.sh` measures it, and finds the highest aggregate write rate at which
no host's cores and no group's apply loop is over capacity.

    python3 benches/raft_groups.py                       # the table in docs/partitioned-meta.md
    python3 benches/raft_groups.py --leader-ms 0.33 --follower-ms 0.12 --hosts 3 --cores 16

Model:
- H hosts with C cores each; G groups of 3 voters, voters placed round-robin over the hosts and
  leaders spread evenly (each host leads G/H groups), as a placement driver would keep them.
- N namespaces with Zipf(s) popularity; a namespace lives in one group, chosen by hashing (`hash`)
  or by a placement that bin-packs namespaces by measured load (`packed`, the rebalancer's aim).
- A manifest PUT costs `leader_ms` of CPU on its group's leader and `follower_ms` on each follower
  (scale.sh's manifest-put figures); a group's state machine applies serially, so one group takes
  at most 1000 / `apply_ms` writes per second whatever the cores.
- A fraction `cross` of writes are blob commits that touch two groups (the blob directory and the
  namespace): they cost the write twice, in two groups.
The rate is the largest X with, for every host h, sum over groups g of X * share(g) * cost(g, h)
<= C * 1000 ms, and for every group X * share(g) <= 1000 / apply_ms.
"""

import argparse
import hashlib
import json


def zipf_shares(n, s):
    weights = [1.0 / (rank ** s) for rank in range(1, n + 1)] if s > 0 else [1.0] * n
    total = sum(weights)
    return [w / total for w in weights]


def group_shares(shares, groups, how, seed):
    load = [0.0] * groups
    if how == "hash":
        for index, share in enumerate(shares):
            digest = hashlib.sha256(f"{seed}/ns-{index}".encode()).digest()
            load[int.from_bytes(digest[:8], "big") % groups] += share
    else:  # packed: heaviest namespace first onto the least loaded group
        for share in sorted(shares, reverse=True):
            load[load.index(min(load))] += share
    return load


def capacity(load, hosts, cores, leader_ms, follower_ms, apply_ms, cross):
    groups = len(load)
    per_write = 1.0 + cross  # a cross-group write is two group writes
    host_ms = [0.0] * hosts
    for g, share in enumerate(load):
        leader = g % hosts
        voters = [leader, (leader + 1) % hosts, (leader + 2) % hosts] if hosts >= 3 else [leader]
        for h in voters:
            host_ms[h] += share * per_write * (leader_ms if h == leader else follower_ms)
    limits = [cores * 1000.0 / ms for ms in host_ms if ms > 0]
    limits += [1000.0 / apply_ms / (share * per_write) for share in load if share > 0]
    return min(limits)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--leader-ms", type=float, default=0.35,
                        help="leader CPU per manifest PUT, ms (scale.sh manifest-put)")
    parser.add_argument("--follower-ms", type=float, default=0.12,
                        help="CPU per manifest PUT on each follower, ms")
    parser.add_argument("--apply-ms", type=float, default=0.33,
                        help="serial part of a write in one group (its apply loop), ms; 0.33 is "
                             "one group at 3,000 PUT/s, as measured on 16 cores")
    parser.add_argument("--hosts", type=int, default=3)
    parser.add_argument("--cores", type=int, default=16)
    parser.add_argument("--namespaces", type=int, default=1000)
    parser.add_argument("--cross", type=float, default=0.0,
                        help="fraction of writes that touch two groups")
    parser.add_argument("--seeds", type=int, default=20, help="hash placements to average")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    rows = []
    for skew in (0.0, 1.0):
        shares = zipf_shares(args.namespaces, skew)
        for groups in (1, 2, 4, 8, 16, 32):
            hashed = [capacity(group_shares(shares, groups, "hash", seed), args.hosts, args.cores,
                               args.leader_ms, args.follower_ms, args.apply_ms, args.cross)
                      for seed in range(args.seeds)]
            packed = capacity(group_shares(shares, groups, "packed", 0), args.hosts, args.cores,
                              args.leader_ms, args.follower_ms, args.apply_ms, args.cross)
            rows.append({"zipf_s": skew, "groups": groups,
                         "hash_mean": sum(hashed) / len(hashed), "hash_min": min(hashed),
                         "packed": packed})
    if args.json:
        print(json.dumps({"args": vars(args), "rows": rows}))
        return
    print(f"{args.hosts} hosts x {args.cores} cores, leader {args.leader_ms} ms, follower "
          f"{args.follower_ms} ms, apply {args.apply_ms} ms per write, {args.namespaces} "
          f"namespaces, cross-group {args.cross:.0%}")
    print(f"{'zipf s':>6} {'groups':>6} {'hash mean/s':>12} {'hash min/s':>11} {'packed/s':>10} "
          f"{'x of 1 group':>12}")
    base = {}
    for row in rows:
        base.setdefault(row["zipf_s"], row["packed"])
        print(f"{row['zipf_s']:>6} {row['groups']:>6} {row['hash_mean']:>12,.0f} "
              f"{row['hash_min']:>11,.0f} {row['packed']:>10,.0f} "
              f"{row['packed'] / base[row['zipf_s']]:>12.2f}")


if __name__ == "__main__":
    main()
