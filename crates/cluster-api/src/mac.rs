//! The truncated HMAC-SHA256 that signs upload tokens and blob URLs.

use ring::hmac;

/// Bytes of the signature kept: 128 bits, as much as either a token or a URL needs.
pub(crate) const MAC: usize = 16;

/// The first [`MAC`] bytes of HMAC-SHA256 with `key` over `parts`, in order.
pub(crate) fn sign(key: &[u8], parts: &[&[u8]]) -> [u8; MAC] {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    let mut context = hmac::Context::with_key(&key);
    for part in parts {
        context.update(part);
    }
    let tag = context.sign();
    let mut mac = [0u8; MAC];
    mac.copy_from_slice(&tag.as_ref()[..MAC]);
    mac
}

/// True when `mac` is the signature of `parts` with `key`. Every byte is compared whatever the
/// first difference, so timing says nothing of it.
pub(crate) fn verify(key: &[u8], parts: &[&[u8]], mac: &[u8]) -> bool {
    let expected = sign(key, parts);
    mac.len() == MAC
        && expected
            .iter()
            .zip(mac)
            .fold(0u8, |difference, (a, b)| difference | (a ^ b))
            == 0
}
