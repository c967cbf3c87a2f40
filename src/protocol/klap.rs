//! KLAP v1 and v2 cryptography (kasa-protocol.md §1c): the credential hashes, both handshake
//! hashes, the session keys and the signed, AES-128-CBC encrypted bodies. Pure functions and
//! one session type; the HTTP exchange is [`super::klap_client`], the device side is the
//! simulator's. Every malformed body is an error, never a panic.

use super::{Error, Result};
use aes::Aes128;
use cbc::cipher::{BlockModeDecrypt, BlockModeEncrypt, KeyIvInit, block_padding::Pkcs7};
use sha2::{Digest, Sha256};

/// The two KLAP generations; they differ only in the credential and handshake hashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// md5-based credential hash (IOT devices such as the HS100 UK hw 4.1).
    V1,
    /// sha1/sha256-based credential hash (SMART devices, and IOT devices announcing `lv` 2).
    V2,
}

/// A TP-Link cloud account (e-mail and password, both case-sensitive). `Debug` hides the
/// password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The account's e-mail address.
    pub username: String,
    /// The account's password.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<hidden>")
            .finish()
    }
}

impl Credentials {
    /// Credentials from an e-mail and a password.
    pub fn new(username: &str, password: &str) -> Self {
        Self {
            username: username.to_owned(),
            password: password.to_owned(),
        }
    }

    /// The Kasa default account that devices fall back to (python-kasa `DEFAULT_CREDENTIALS`).
    pub fn kasa_default() -> Self {
        Self::new("kasa@tp-link.net", "kasaSetup")
    }

    /// Blank credentials: what a device never bound to a cloud account expects.
    pub fn blank() -> Self {
        Self::new("", "")
    }
}

/// The candidates a client checks a handshake against, in order: the configured account (if
/// any), the Kasa default, blank.
pub fn candidates(configured: Option<&Credentials>) -> Vec<Credentials> {
    configured
        .cloned()
        .into_iter()
        .chain([Credentials::kasa_default(), Credentials::blank()])
        .collect()
}

/// The AES transport's candidates: as for KLAP, with the Tapo default account
/// (`test@tp-link.net` / `test`, which python-kasa tries after a login error) before blank.
pub fn aes_candidates(configured: Option<&Credentials>) -> Vec<Credentials> {
    let mut c = candidates(configured);
    let blank = c.len() - 1;
    c.insert(blank, Credentials::new("test@tp-link.net", "test"));
    c
}

fn digest<D: Digest>(parts: &[&[u8]]) -> Vec<u8> {
    let mut d = D::new();
    for p in parts {
        d.update(p);
    }
    d.finalize().to_vec()
}

fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut d = Sha256::new();
    for p in parts {
        d.update(p);
    }
    d.finalize().into()
}

/// The credential hash: v1 `md5(md5(user) ‖ md5(pass))`, v2 `sha256(sha1(user) ‖ sha1(pass))`.
pub fn auth_hash(v: Version, c: &Credentials) -> Vec<u8> {
    let (u, p) = (c.username.as_bytes(), c.password.as_bytes());
    match v {
        Version::V1 => digest::<md5::Md5>(&[&digest::<md5::Md5>(&[u]), &digest::<md5::Md5>(&[p])]),
        Version::V2 => {
            digest::<Sha256>(&[&digest::<sha1::Sha1>(&[u]), &digest::<sha1::Sha1>(&[p])])
        }
    }
}

/// The device's proof in the handshake1 answer.
pub fn server_hash(v: Version, local: &[u8], remote: &[u8], auth: &[u8]) -> [u8; 32] {
    match v {
        Version::V1 => sha256(&[local, auth]),
        Version::V2 => sha256(&[local, remote, auth]),
    }
}

/// The client's proof, the handshake2 body.
pub fn client_hash(v: Version, local: &[u8], remote: &[u8], auth: &[u8]) -> [u8; 32] {
    match v {
        Version::V1 => sha256(&[remote, auth]),
        Version::V2 => sha256(&[remote, local, auth]),
    }
}

/// Length of the signature in front of every body.
pub const SIG_LEN: usize = 32;

/// An established session: key, IV prefix, signing key and the request sequence number.
#[derive(Clone)]
pub struct Session {
    key: [u8; 16],
    iv: [u8; 12],
    sig: [u8; 28],
    seq: i32,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("seq", &self.seq).finish()
    }
}

impl Session {
    /// Derives the session from both seeds and the matched credential hash.
    pub fn new(local: &[u8], remote: &[u8], auth: &[u8]) -> Self {
        let key = sha256(&[b"lsk", local, remote, auth]);
        let iv = sha256(&[b"iv", local, remote, auth]);
        let sig = sha256(&[b"ldk", local, remote, auth]);
        let mut s = Self {
            key: [0; 16],
            iv: [0; 12],
            sig: [0; 28],
            seq: i32::from_be_bytes([iv[28], iv[29], iv[30], iv[31]]),
        };
        s.key.copy_from_slice(&key[..16]);
        s.iv.copy_from_slice(&iv[..12]);
        s.sig.copy_from_slice(&sig[..28]);
        s
    }

    /// The last sequence number used (the initial one before the first request).
    pub fn seq(&self) -> i32 {
        self.seq
    }

    fn iv(&self, seq: i32) -> [u8; 16] {
        let mut iv = [0; 16];
        iv[..12].copy_from_slice(&self.iv);
        iv[12..].copy_from_slice(&seq.to_be_bytes());
        iv
    }

    fn signature(&self, seq: i32, ciphertext: &[u8]) -> [u8; 32] {
        sha256(&[&self.sig, &seq.to_be_bytes(), ciphertext])
    }

    /// Client side: advances the sequence and returns it with the request body.
    pub fn next_request(&mut self, plaintext: &[u8]) -> (i32, Vec<u8>) {
        self.seq = self.seq.wrapping_add(1);
        (self.seq, self.seal(self.seq, plaintext))
    }

    /// `signature ‖ ciphertext` of `plaintext` under `seq` (a request, or the answer to one).
    pub fn seal(&self, seq: i32, plaintext: &[u8]) -> Vec<u8> {
        let ct = cbc::Encryptor::<Aes128>::new(&self.key.into(), &self.iv(seq).into())
            .encrypt_padded_vec::<Pkcs7>(plaintext);
        let mut body = self.signature(seq, &ct).to_vec();
        body.extend_from_slice(&ct);
        body
    }

    /// Decrypts a body sealed under `seq`. With `verify`, the signature must match (the device
    /// side checks requests; like python-kasa, the client does not check answers).
    pub fn open(&self, seq: i32, body: &[u8], verify: bool) -> Result<Vec<u8>> {
        let Some((sig, ct)) = body.split_at_checked(SIG_LEN) else {
            return Err(Error::Decode(format!(
                "KLAP body of {} bytes is shorter than its signature",
                body.len()
            )));
        };
        if verify && sig != self.signature(seq, ct) {
            return Err(Error::Decode("KLAP body has a bad signature".into()));
        }
        cbc::Decryptor::<Aes128>::new(&self.key.into(), &self.iv(seq).into())
            .decrypt_padded_vec::<Pkcs7>(ct)
            .map_err(|_| Error::Decode("KLAP body does not decrypt (bad length or padding)".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    const LOCAL: [u8; 16] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];
    const REMOTE: [u8; 16] = [
        16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31,
    ];
    const PLAIN: &[u8] = br#"{"system":{"get_sysinfo":{}}}"#;

    struct Vectors {
        auth: &'static str,
        server: &'static str,
        client: &'static str,
        key: &'static str,
        iv: &'static str,
        seq: i32,
        sig: &'static str,
        body: &'static str,
        blank: &'static str,
        kasa: &'static str,
    }

    fn check(v: Version, x: &Vectors) {
        let creds = Credentials::new("user@example.com", "hunter2");
        let auth = auth_hash(v, &creds);
        assert_eq!(hex(&auth), x.auth, "{v:?} auth_hash");
        assert_eq!(hex(&server_hash(v, &LOCAL, &REMOTE, &auth)), x.server);
        assert_eq!(hex(&client_hash(v, &LOCAL, &REMOTE, &auth)), x.client);
        let mut s = Session::new(&LOCAL, &REMOTE, &auth);
        assert_eq!(hex(&s.key), x.key, "{v:?} key");
        assert_eq!(hex(&s.iv), x.iv, "{v:?} iv prefix");
        assert_eq!(s.seq(), x.seq, "{v:?} initial seq");
        assert_eq!(hex(&s.sig), x.sig, "{v:?} sig");
        let (seq, body) = s.next_request(PLAIN);
        assert_eq!(seq, x.seq + 1, "the first request uses initial + 1");
        assert_eq!(hex(&body), x.body, "{v:?} first request body");
        assert_eq!(s.open(seq, &body, true).unwrap(), PLAIN);
        assert_eq!(hex(&auth_hash(v, &Credentials::blank())), x.blank);
        assert_eq!(hex(&auth_hash(v, &Credentials::kasa_default())), x.kasa);
    }

    #[test]
    fn klap_v1_known_answers() {
        check(
            Version::V1,
            &Vectors {
                auth: "c365c2d8159d185d19139d3d3ef3d6db",
                server: "f38b5a8f75dc99643ed238d557b330563c40e6f4e9381e1ea7c808781e7721e9",
                client: "896a5d90b80b90f109801e2744a67c5da313fb7e1b124cf991dab8406fe4b960",
                key: "6701d755c8f155a8ac4696adc2a68efa",
                iv: "0213b513e8fb33407931c7e5",
                seq: -1533429905,
                sig: "9d9a57733176fe1342d049337a18e82d58597896abdffc0072486c1f",
                body: "782e8fad71a685e21d018ce73b6224b6636af9f166437662982a71246ed97543209bd9cd367d42a0593c3310b242cacfdfc802ea610a72ac65607d8d9258b7d5",
                blank: "5873dd45edd01f09c1ef2e7819369e8e",
                kasa: "74b751bdd208bc155ae2a6d4167cc44d",
            },
        );
    }

    #[test]
    fn klap_v2_known_answers() {
        check(
            Version::V2,
            &Vectors {
                auth: "b49b2da16ee8155335c944a908c08fb4d18ea952ca0f73b60c8f77d08642e781",
                server: "f55f1932e0bebe2e755839cf79f0ac918e136ae7038f9effbe21bf1285b3a1c2",
                client: "94bdb61c3b7f1fbe093dfc783d8dd91f8fb9141d0f99ccad01f0831c1c3dbcbe",
                key: "bdaeeb0da10915fe4267dfdaa22a3586",
                iv: "1cc7a7e88ef0916075821790",
                seq: -1214602357,
                sig: "419634a6c004241f729c2344210d6dab5557bbff9de2d4fb41bbb189",
                body: "7487857b7cf47ecce6e3c7dc37d2791565a902be4fa4bf1015000bf03a171c36f3e3c66c6c30f7cc8710a4412b365d0a0124d27a43921f6a87adb999522337bb",
                blank: "b8628ab91c74f531603f6d5b45e730e54c123a7247b8978272c03f1e13560cea",
                kasa: "49fc4839a2733ffbf464337648f65dc411778d4c03ec82c5e4cccc682163fa64",
            },
        );
    }

    #[test]
    fn damaged_bodies_are_errors() {
        let s = Session::new(&LOCAL, &REMOTE, &[7; 16]);
        let body = s.seal(5, PLAIN);
        assert!(s.open(5, &body[..10], true).is_err(), "truncated signature");
        assert!(s.open(5, &body[..40], true).is_err(), "partial block");
        assert!(s.open(6, &body, true).is_err(), "another sequence number");
        let mut bad = body.clone();
        bad[0] ^= 1;
        assert!(s.open(5, &bad, true).is_err(), "bad signature");
        assert_eq!(
            s.open(5, &bad, false).unwrap(),
            PLAIN,
            "unchecked signature"
        );
        let mut pad = body;
        let n = pad.len();
        pad[n - 1] ^= 0x55;
        assert!(s.open(5, &pad, false).is_err(), "bad padding");
        assert_eq!(s.open(5, &s.seal(5, b""), true).unwrap(), b"");
    }

    proptest::proptest! {
        #[test]
        fn any_body_is_an_error_or_a_plaintext_never_a_panic(
            seq in proptest::prelude::any::<i32>(),
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
        ) {
            let s = Session::new(&LOCAL, &REMOTE, &[9; 32]);
            let _ = s.open(seq, &body, true);
            let _ = s.open(seq, &body, false);
        }

        #[test]
        fn sealed_bodies_open_under_their_own_sequence_only(
            seq in proptest::prelude::any::<i32>(),
            plain in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..100),
        ) {
            let s = Session::new(&LOCAL, &REMOTE, &[9; 32]);
            let body = s.seal(seq, &plain);
            proptest::prop_assert_eq!(body.len(), SIG_LEN + (plain.len() / 16 + 1) * 16);
            proptest::prop_assert_eq!(s.open(seq, &body, true).unwrap(), plain);
            proptest::prop_assert!(s.open(seq.wrapping_add(1), &body, true).is_err());
        }
    }

    #[test]
    fn candidates_put_the_configured_account_first() {
        let me = Credentials::new("me@example.com", "pw");
        let c = candidates(Some(&me));
        assert_eq!(
            c,
            vec![me, Credentials::kasa_default(), Credentials::blank()]
        );
        assert_eq!(candidates(None).len(), 2);
        assert!(!format!("{:?}", c[0]).contains("pw"));
    }
}
