//! [`Authorizer`]: what a principal may do on a repository, decided from the policies of one
//! `AuthState`. Built once per state version; a decision is a few glob matches, no I/O.
//!
//! Rules add up and nothing subtracts: a policy for `anonymous` applies to everyone (logging in
//! never loses access), one for `authenticated` to every account, one naming an account to it
//! alone; an administrator account may do everything. With no matching rule the answer is
//! nothing (default deny).

use cluster_api::{Action, AuthState, Policy, Subject};

use globset::{GlobBuilder, GlobMatcher};

/// A set of repository actions (`admin` expands to all three).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ActionSet(u8);

impl ActionSet {
    pub const NONE: ActionSet = ActionSet(0);
    pub const PULL: ActionSet = ActionSet(1);
    pub const PUSH: ActionSet = ActionSet(2);
    pub const DELETE: ActionSet = ActionSet(4);
    pub const ALL: ActionSet = ActionSet(7);

    pub fn of(action: Action) -> ActionSet {
        match action {
            Action::Pull => ActionSet::PULL,
            Action::Push => ActionSet::PUSH,
            Action::Delete => ActionSet::DELETE,
            Action::Admin => ActionSet::ALL,
        }
    }

    /// Docker's action names: `pull`, `push`, `delete`, and `*` for all of them. Unknown names
    /// add nothing.
    pub fn parse_docker(name: &str) -> ActionSet {
        match name {
            "pull" => ActionSet::PULL,
            "push" => ActionSet::PUSH,
            "delete" => ActionSet::DELETE,
            "*" => ActionSet::ALL,
            _ => ActionSet::NONE,
        }
    }

    /// The union of [`parse_docker`](ActionSet::parse_docker) over `names`.
    pub fn parse_docker_all<'a>(names: impl IntoIterator<Item = &'a str>) -> ActionSet {
        names.into_iter().fold(ActionSet::NONE, |set, name| {
            set.union(ActionSet::parse_docker(name))
        })
    }

    pub fn union(self, other: ActionSet) -> ActionSet {
        ActionSet(self.0 | other.0)
    }

    pub fn intersection(self, other: ActionSet) -> ActionSet {
        ActionSet(self.0 & other.0)
    }

    pub fn contains(self, other: ActionSet) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Docker's names of the actions in the set, in a fixed order.
    pub fn names(self) -> Vec<&'static str> {
        [
            (ActionSet::PULL, "pull"),
            (ActionSet::PUSH, "push"),
            (ActionSet::DELETE, "delete"),
        ]
        .into_iter()
        .filter(|(action, _)| self.contains(*action))
        .map(|(_, name)| name)
        .collect()
    }
}

/// Who is asking.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    Anonymous,
    Account { name: String, admin: bool },
}

impl Principal {
    /// The name in logs and tokens: the account name, or `anonymous`.
    pub fn name(&self) -> &str {
        match self {
            Principal::Anonymous => "anonymous",
            Principal::Account { name, .. } => name,
        }
    }

    pub fn is_admin(&self) -> bool {
        matches!(self, Principal::Account { admin: true, .. })
    }
}

struct Rule {
    subject: Subject,
    matcher: GlobMatcher,
    actions: ActionSet,
}

/// Compiles a repository glob: `*` and `?` stay within a path segment, `**` crosses segments.
pub fn compile_glob(pattern: &str) -> Result<GlobMatcher, String> {
    GlobBuilder::new(pattern)
        .literal_separator(true)
        .backslash_escape(false)
        .build()
        .map(|glob| glob.compile_matcher())
        .map_err(|e| format!("repository pattern {pattern:?} is invalid: {e}"))
}

/// The policies of one state, compiled.
pub struct Authorizer {
    rules: Vec<Rule>,
}

impl Authorizer {
    /// Compiles every policy of `state`. A policy whose glob does not compile (meta checked the
    /// characters, not the glob grammar) grants nothing and is reported in the second value.
    pub fn new(state: &AuthState) -> (Authorizer, Vec<String>) {
        let mut rules = Vec::new();
        let mut problems = Vec::new();
        for policy in &state.policies {
            match compile_glob(&policy.repositories) {
                Ok(matcher) => rules.push(Rule {
                    subject: policy.subject.clone(),
                    matcher,
                    actions: actions_of(policy),
                }),
                Err(problem) => problems.push(format!("policy {}: {problem}", policy.id)),
            }
        }
        (Authorizer { rules }, problems)
    }

    /// Everything `principal` may do on repository `repo` (a name the caller has validated).
    pub fn allowed(&self, principal: &Principal, repo: &str) -> ActionSet {
        if principal.is_admin() {
            return ActionSet::ALL;
        }
        self.rules
            .iter()
            .filter(|rule| applies(&rule.subject, principal))
            .filter(|rule| rule.matcher.is_match(repo))
            .fold(ActionSet::NONE, |set, rule| set.union(rule.actions))
    }

    /// Whether any rule could grant `principal` anything at all (decides whether an anonymous
    /// caller is worth a token).
    pub fn grants_anything(&self, principal: &Principal) -> bool {
        principal.is_admin()
            || self
                .rules
                .iter()
                .any(|rule| applies(&rule.subject, principal))
    }
}

fn actions_of(policy: &Policy) -> ActionSet {
    policy.actions.iter().fold(ActionSet::NONE, |set, action| {
        set.union(ActionSet::of(*action))
    })
}

fn applies(subject: &Subject, principal: &Principal) -> bool {
    match (subject, principal) {
        (Subject::Anonymous, _) => true,
        (Subject::Authenticated, Principal::Account { .. }) => true,
        (Subject::Account(name), Principal::Account { name: who, .. }) => name == who,
        _ => false,
    }
}

/// Builds a policy from the API's (or the CLI's) fields, checking the glob compiles.
pub fn policy_from_parts(
    id: Option<String>,
    subject: &str,
    repositories: &str,
    actions: &[String],
) -> Result<Policy, String> {
    let subject = Subject::parse(subject).map_err(|e| e.to_string())?;
    compile_glob(repositories)?;
    let actions = actions
        .iter()
        .flat_map(|list| list.split(','))
        .map(str::trim)
        .filter(|action| !action.is_empty())
        .map(|action| {
            Action::parse(action)
                .ok_or_else(|| format!("{action:?} is not one of pull, push, delete, admin"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let id = id.unwrap_or_else(|| crate::views::rule_id(&[&subject.to_string(), repositories]));
    Ok(Policy {
        id,
        subject,
        repositories: repositories.to_owned(),
        actions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(subject: Subject, repositories: &str, actions: &[Action]) -> Policy {
        Policy {
            id: repositories.replace(['/', '*'], "_"),
            subject,
            repositories: repositories.into(),
            actions: actions.to_vec(),
        }
    }

    fn account(name: &str) -> Principal {
        Principal::Account {
            name: name.into(),
            admin: false,
        }
    }

    fn authorizer(policies: Vec<Policy>) -> Authorizer {
        let (authorizer, problems) = Authorizer::new(&AuthState {
            policies,
            ..AuthState::default()
        });
        assert!(problems.is_empty(), "{problems:?}");
        authorizer
    }

    #[test]
    fn single_star_stays_in_its_segment_and_double_star_crosses() {
        let ci = Subject::Account("ci".into());
        let auth = authorizer(vec![
            policy(ci.clone(), "ci/*", &[Action::Pull, Action::Push]),
            policy(Subject::Anonymous, "*/public/**", &[Action::Pull]),
        ]);
        let robot = account("ci");
        assert_eq!(
            auth.allowed(&robot, "ci/app"),
            ActionSet::PULL.union(ActionSet::PUSH)
        );
        assert_eq!(auth.allowed(&robot, "ci/app/sub"), ActionSet::NONE);
        assert_eq!(auth.allowed(&robot, "prod/app"), ActionSet::NONE);
        assert_eq!(auth.allowed(&robot, "cix/app"), ActionSet::NONE);
        // A name that merely looks like it walks up the tree is matched as text, never resolved.
        assert_eq!(auth.allowed(&robot, "ci/../prod/app"), ActionSet::NONE);
        for anyone in [Principal::Anonymous, account("bob"), robot] {
            assert_eq!(auth.allowed(&anyone, "team/public/x/y"), ActionSet::PULL);
            assert_eq!(auth.allowed(&anyone, "team/private/x"), ActionSet::NONE);
        }
    }

    #[test]
    fn rules_add_up_admin_expands_and_admins_may_do_everything() {
        let auth = authorizer(vec![
            policy(Subject::Authenticated, "shared/**", &[Action::Pull]),
            policy(
                Subject::Account("ann".into()),
                "team-a/**",
                &[Action::Admin],
            ),
            policy(Subject::Account("ann".into()), "shared/**", &[Action::Push]),
        ]);
        let ann = account("ann");
        assert_eq!(auth.allowed(&ann, "team-a/x"), ActionSet::ALL);
        assert_eq!(
            auth.allowed(&ann, "shared/x"),
            ActionSet::PULL.union(ActionSet::PUSH)
        );
        assert_eq!(auth.allowed(&account("bob"), "shared/x"), ActionSet::PULL);
        assert_eq!(
            auth.allowed(&Principal::Anonymous, "shared/x"),
            ActionSet::NONE
        );
        let root = Principal::Account {
            name: "root".into(),
            admin: true,
        };
        assert_eq!(auth.allowed(&root, "anything/at/all"), ActionSet::ALL);
        assert!(!auth.grants_anything(&Principal::Anonymous));
    }

    #[test]
    fn docker_action_names() {
        assert_eq!(ActionSet::parse_docker("*"), ActionSet::ALL);
        assert_eq!(ActionSet::parse_docker("fly"), ActionSet::NONE);
        assert_eq!(ActionSet::ALL.names(), ["pull", "push", "delete"]);
    }

    #[test]
    fn action_sets_are_sets() {
        assert_eq!(ActionSet::parse_docker("pull"), ActionSet::PULL);
        assert_eq!(ActionSet::parse_docker("push"), ActionSet::PUSH);
        assert_eq!(ActionSet::parse_docker("delete"), ActionSet::DELETE);
        let pull_push = ActionSet::parse_docker_all(["pull", "push", "fly"]);
        assert_eq!(pull_push.names(), ["pull", "push"]);
        assert_eq!(pull_push.union(ActionSet::PULL), pull_push);
        assert_eq!(pull_push.union(ActionSet::DELETE), ActionSet::ALL);
        assert_eq!(pull_push.intersection(ActionSet::PULL), ActionSet::PULL);
        assert_eq!(pull_push.intersection(ActionSet::DELETE), ActionSet::NONE);
        assert_eq!(ActionSet::ALL.intersection(pull_push), pull_push);
        assert!(pull_push.contains(ActionSet::PUSH));
        assert!(!pull_push.contains(ActionSet::DELETE));
        assert!(!ActionSet::PULL.contains(pull_push));
        assert!(ActionSet::NONE.is_empty());
        assert!(!ActionSet::PULL.is_empty());
        assert!(ActionSet::of(Action::Admin).contains(ActionSet::ALL));
    }

    #[test]
    fn principals_are_named_and_grants_anything_tells_who_may_get_something() {
        let bob = Principal::Account {
            name: "bob".into(),
            admin: false,
        };
        let root = Principal::Account {
            name: "root".into(),
            admin: true,
        };
        assert_eq!(Principal::Anonymous.name(), "anonymous");
        assert_eq!(bob.name(), "bob");
        let (nobody, _) = Authorizer::new(&AuthState::default());
        assert!(!nobody.grants_anything(&Principal::Anonymous));
        assert!(!nobody.grants_anything(&bob));
        assert!(
            nobody.grants_anything(&root),
            "an administrator may do everything"
        );
        let (bobs, _) = Authorizer::new(&AuthState {
            policies: vec![policy(
                Subject::Account("bob".into()),
                "team/**",
                &[Action::Pull],
            )],
            ..AuthState::default()
        });
        assert!(bobs.grants_anything(&bob));
        assert!(!bobs.grants_anything(&Principal::Anonymous));
    }

    #[test]
    fn policies_from_parts_read_comma_lists_and_refuse_unknown_actions() {
        let policy =
            policy_from_parts(None, "authenticated", "team/**", &["pull,, push".into()]).unwrap();
        assert_eq!(policy.actions, [Action::Pull, Action::Push]);
        assert_eq!(policy.subject, Subject::Authenticated);
        let refused = policy_from_parts(None, "anonymous", "team/**", &["pull,fly".into()]);
        assert!(refused.unwrap_err().contains("fly"));
        assert!(policy_from_parts(None, "anonymous", "a[", &["pull".into()]).is_err());
    }

    #[test]
    fn bad_globs_grant_nothing_and_are_reported() {
        let (auth, problems) = Authorizer::new(&AuthState {
            policies: vec![policy(Subject::Anonymous, "a[", &[Action::Pull])],
            ..AuthState::default()
        });
        assert_eq!(problems.len(), 1);
        assert_eq!(auth.allowed(&Principal::Anonymous, "a["), ActionSet::NONE);
    }
}
