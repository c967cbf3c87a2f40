//! Randomness from the operating system: bytes and URL-safe tokens (keys, session ids,
//! cookies, nonces). Everything that needs chance takes it from here.

/// Random bytes from the operating system.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).expect("the OS random number generator is available");
    b
}

/// A random URL-safe token of `N` bytes of entropy.
pub fn random_token<const N: usize>() -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes::<N>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random() {
        assert_ne!(random_token::<32>(), random_token::<32>());
        assert_eq!(random_token::<32>().len(), 43);
    }
}
