//! XOR autokey cipher of the legacy protocol: initial key 171, the key becomes each ciphertext
//! byte. Works on the UTF-8 bytes of the JSON; no padding, no integrity.

const INITIAL_KEY: u8 = 171;

/// Encrypts plaintext bytes.
pub fn encrypt(plain: &[u8]) -> Vec<u8> {
    let mut key = INITIAL_KEY;
    plain
        .iter()
        .map(|&p| {
            key ^= p;
            key
        })
        .collect()
}

/// Decrypts ciphertext bytes in place.
pub fn decrypt_in_place(buf: &mut [u8]) {
    let mut key = INITIAL_KEY;
    for c in buf.iter_mut() {
        let next = *c;
        *c ^= key;
        key = next;
    }
}

/// Decrypts ciphertext bytes.
pub fn decrypt(cipher: &[u8]) -> Vec<u8> {
    let mut v = cipher.to_vec();
    decrypt_in_place(&mut v);
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn known_vectors_from_the_protocol_sheet() {
        assert_eq!(
            hex(&encrypt(br#"{"system":{"get_sysinfo":{}}}"#)),
            "d0f281f88bff9af7d5ef94b6d1b4c09fec95e68fe187e8caf08bf68bf6"
        );
        assert_eq!(
            hex(&encrypt(br#"{"emeter":{"get_realtime":{}}}"#)),
            "d0f297fa9feb8efcdee49fbddabfcb94e683e28efa93fe9bb983f885f885"
        );
        assert_eq!(
            hex(&encrypt(br#"{"system":{"set_relay_state":{"state":1}}}"#)),
            "d0f281f88bff9af7d5ef94b6c5a0d48bf99cf091e8b7c4b0d1a5c0e2d8a381f286e793f6d4eedfa2dfa2"
        );
        assert_eq!(hex(&encrypt(b"{}")), "d0ad");
        let snowman = "{'snowman': '\u{2603}'}";
        assert_eq!(
            hex(&encrypt(snowman.as_bytes())),
            "d0f784ea85f29ffe90b78dad8a68f0735429"
        );
        assert_eq!(decrypt(&encrypt(snowman.as_bytes())), snowman.as_bytes());
    }

    proptest! {
        #[test]
        fn round_trip(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
            prop_assert_eq!(decrypt(&encrypt(&data)), data);
        }
    }
}
