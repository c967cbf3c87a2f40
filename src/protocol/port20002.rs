//! Discovery of KLAP and AES devices on UDP 20002 (kasa-protocol.md §1b): the 16-byte header
//! with its CRC-32 rule, the probe with an RSA public key, and the plain JSON answer, which
//! names the device, its request family and the transport it wants.

use super::{Error, Result};
use crate::domain::{Family, Transport};
use serde_json::{Value, json};

/// The default discovery port of KLAP and AES devices.
pub use crate::domain::device::PORT_20002 as DEFAULT_PORT;

/// Length of the header in front of every probe and answer.
pub const HEADER_LEN: usize = 16;

/// Written into the CRC field before the CRC-32 over header and payload is computed.
const CRC_SEED: u32 = 0x5A6B_7C8D;

/// The public half of a 2048-bit RSA key sent in every probe. Devices use the key only to
/// encrypt an `encrypt_info` block, which plugs and strips do not send; its private half was
/// not kept.
pub const PROBE_KEY: &str = "-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAoD73PR9yPxAtc7ijAFyV
lwUgOeWYkn7ajG5J2PNR78rq/Hf1rSJmkEhjE4VfWElR9haoB1M873QKJ1dtKNRe
Bm4SCpj6l1qMgFWkhtwqJW3d5HpVwIasXB/Thx+XZvtsw6bffzbmSUPreFAY1cxf
IPEo3d9hKjoICReUJ8diH3/y0mjDjusQUcQ5vCJAxbnpHCYPhjy9A6guHQFlX1p2
+pbwsiYOoGe7eDRkN6CgzG38mp6KCwh/xTxYEL42VO7DJDXgJetWU40wik92k2/w
/MvGJDr3FathP9RnpiTOi5jtpyrnZ2NiBPSUqg/JnUbpBOsM6RnRiyJ42b/uf6wJ
awIDAQAB
-----END PUBLIC KEY-----
";

/// A datagram: header (`version` 2, `msg_type` 0, `op_code`, payload size, `flags`, serial,
/// CRC) and payload.
pub fn datagram(op_code: u16, flags: u8, serial: u32, payload: &[u8]) -> Vec<u8> {
    let size = u16::try_from(payload.len()).unwrap_or(u16::MAX);
    let mut d = Vec::with_capacity(HEADER_LEN + payload.len());
    d.extend_from_slice(&[2, 0]);
    d.extend_from_slice(&op_code.to_be_bytes());
    d.extend_from_slice(&size.to_be_bytes());
    d.extend_from_slice(&[flags, 0]);
    d.extend_from_slice(&serial.to_be_bytes());
    d.extend_from_slice(&CRC_SEED.to_be_bytes());
    d.extend_from_slice(payload);
    let crc = crc32fast::hash(&d);
    d[12..16].copy_from_slice(&crc.to_be_bytes());
    d
}

/// The discovery probe: `op_code` 1, flags `0x11`, the RSA key as payload.
pub fn probe(serial: u32) -> Vec<u8> {
    let payload = json!({"params": {"rsa_key": PROBE_KEY}}).to_string();
    datagram(1, 0x11, serial, payload.as_bytes())
}

/// The payload of a datagram whose CRC obeys the rule (what a device checks in a probe).
pub fn checked_payload(d: &[u8]) -> Result<&[u8]> {
    if d.len() < HEADER_LEN {
        return Err(Error::Decode(format!(
            "datagram of {} bytes has no header",
            d.len()
        )));
    }
    let mut copy = d.to_vec();
    copy[12..16].copy_from_slice(&CRC_SEED.to_be_bytes());
    let want = u32::from_be_bytes([d[12], d[13], d[14], d[15]]);
    if crc32fast::hash(&copy) != want {
        return Err(Error::Decode("datagram has a bad CRC".into()));
    }
    Ok(&d[HEADER_LEN..])
}

/// What a device said about itself on 20002.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announce {
    /// `device_id`.
    pub device_id: String,
    /// `device_type`, e.g. `SMART.KASAPLUG` or `IOT.SMARTPLUGSWITCH`.
    pub device_type: String,
    /// `device_model`, e.g. `KP125M(US)`.
    pub model: String,
    /// `mac`.
    pub mac: String,
    /// `mgt_encrypt_schm.encrypt_type` (else `encrypt_info.sym_schm`): `KLAP`, `AES`, ….
    pub encrypt_type: Option<String>,
    /// `mgt_encrypt_schm.is_support_https`.
    pub https: bool,
    /// `mgt_encrypt_schm.http_port` (80 when absent).
    pub http_port: u16,
    /// `mgt_encrypt_schm.lv` (else the largest of `encrypt_type`; 1 when absent): orders the
    /// KLAP versions.
    pub login_version: u8,
    /// `mgt_encrypt_schm.lv` as announced, when it is.
    pub lv: Option<u8>,
}

fn text(v: &Value, k: &str) -> String {
    v.get(k)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// Parses an answer datagram (its header is not checked, as python-kasa does not either).
pub fn parse_answer(d: &[u8]) -> Result<Announce> {
    let body = d
        .get(HEADER_LEN..)
        .ok_or_else(|| Error::Decode(format!("answer of {} bytes has no header", d.len())))?;
    let v: Value = serde_json::from_slice(body).map_err(|e| Error::Decode(e.to_string()))?;
    match v.get("error_code").and_then(Value::as_i64) {
        Some(0) | None => {}
        Some(code) => return Err(Error::Decode(format!("discovery answer error_code {code}"))),
    }
    let r = v
        .get("result")
        .filter(|r| r.is_object())
        .ok_or_else(|| Error::Decode("discovery answer has no result".into()))?;
    let device_id = text(r, "device_id");
    if device_id.is_empty() {
        return Err(Error::Decode("discovery answer has no device_id".into()));
    }
    let schm = r.get("mgt_encrypt_schm").unwrap_or(&Value::Null);
    let encrypt_type = schm
        .get("encrypt_type")
        .or_else(|| r.pointer("/encrypt_info/sym_schm"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let listed_lv = r
        .get("encrypt_type")
        .and_then(Value::as_array)
        .and_then(|a| {
            a.iter()
                .filter_map(|x| x.as_str().and_then(|s| s.parse::<u8>().ok()))
                .max()
        });
    let lv = schm
        .get("lv")
        .and_then(Value::as_u64)
        .and_then(|lv| u8::try_from(lv).ok());
    let login_version = lv.or(listed_lv).unwrap_or(1);
    Ok(Announce {
        device_id,
        device_type: text(r, "device_type"),
        model: text(r, "device_model"),
        mac: text(r, "mac"),
        encrypt_type,
        https: schm
            .get("is_support_https")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        http_port: schm
            .get("http_port")
            .and_then(Value::as_u64)
            .and_then(|p| u16::try_from(p).ok())
            .filter(|&p| p != 0)
            .unwrap_or(80),
        login_version,
        lv,
    })
}

impl Announce {
    /// The AES `login_device` version to use: the announced `lv`, 2 when there is none, and
    /// 1 (the reversible password in base64) only for a `trusted` device (one kasad knew
    /// before, or any with `[kasa] allow_login_v1`); an untrusted device asking for 1 gets 2.
    pub fn aes_login_version(&self, trusted: bool) -> u8 {
        match self.lv {
            Some(1) if trusted => 1,
            Some(0 | 1) | None => 2,
            Some(v) => v,
        }
    }

    /// The request family, from the prefix of `device_type`; `None` for anything else.
    pub fn family(&self) -> Option<Family> {
        match self.device_type.split('.').next() {
            Some("IOT") => Some(Family::Iot),
            Some("SMART") => Some(Family::Smart),
            _ => None,
        }
    }

    /// The transports to try, best first (python-kasa's `device_factory` table; when the
    /// device does not say, both candidates in turn). An error names why the daemon cannot
    /// talk to the device (a camera, HTTPS, TPAP, an unknown family).
    pub fn transports(&self) -> std::result::Result<Vec<Transport>, String> {
        use Transport::*;
        let family = self
            .family()
            .ok_or_else(|| format!("device type {:?} is not supported", self.device_type))?;
        if self.https {
            return Err("the HTTPS transport (cameras, hubs) is not supported".into());
        }
        match (family, self.encrypt_type.as_deref()) {
            (Family::Iot, Some("KLAP")) if self.login_version >= 2 => Ok(vec![KlapV2, Klap]),
            (Family::Iot, Some("KLAP")) => Ok(vec![Klap, KlapV2]),
            (Family::Smart, Some("KLAP")) => Ok(vec![KlapV2]),
            (Family::Smart, Some("AES")) => Ok(vec![Aes]),
            (Family::Iot, None) => Ok(vec![Klap, KlapV2]),
            (Family::Smart, None) => Ok(vec![KlapV2, Aes]),
            (_, Some(other)) => Err(format!("the {other} transport is not supported")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_crc_rule_reproduces_the_static_probe() {
        let d = datagram(1, 0, 0, b"");
        let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "020000010000000000000000463cb5d3");
        assert_eq!(checked_payload(&d).unwrap(), b"");
    }

    #[test]
    fn the_probe_carries_the_key_and_a_valid_crc() {
        let p = probe(0xDEAD_BEEF);
        assert_eq!(&p[..4], &[2, 0, 0, 1]);
        assert_eq!(&p[6..8], &[0x11, 0], "flags and pad");
        assert_eq!(&p[8..12], &0xDEAD_BEEFu32.to_be_bytes(), "serial");
        let payload: Value = serde_json::from_slice(checked_payload(&p).unwrap()).unwrap();
        assert!(
            payload["params"]["rsa_key"]
                .as_str()
                .unwrap()
                .starts_with("-----BEGIN PUBLIC KEY-----")
        );
        let size = u16::from_be_bytes([p[4], p[5]]) as usize;
        assert_eq!(size, p.len() - HEADER_LEN);
        let mut bad = p.clone();
        bad[20] ^= 1;
        assert!(
            checked_payload(&bad).is_err(),
            "a changed byte breaks the CRC"
        );
    }

    fn answer(result: Value) -> Vec<u8> {
        datagram(
            1,
            0,
            0,
            json!({"error_code": 0, "result": result})
                .to_string()
                .as_bytes(),
        )
    }

    #[test]
    fn answers_choose_the_transport() {
        let kp125m = answer(json!({
            "device_id": "80ABC", "device_type": "SMART.KASAPLUG", "device_model": "KP125M(US)",
            "mac": "78-8C-B5-00-00-01", "ip": "192.168.1.100",
            "mgt_encrypt_schm": {"is_support_https": false, "encrypt_type": "KLAP", "http_port": 8080, "lv": 2}
        }));
        let a = parse_answer(&kp125m).unwrap();
        assert_eq!(a.family(), Some(Family::Smart));
        assert_eq!((a.http_port, a.login_version), (8080, 2));
        assert_eq!(a.aes_login_version(false), 2);
        assert_eq!(a.transports().unwrap(), vec![Transport::KlapV2]);

        let hs100uk = answer(
            json!({"device_id": "8006", "device_type": "IOT.SMARTPLUGSWITCH",
            "mgt_encrypt_schm": {"encrypt_type": "KLAP"}}),
        );
        let a = parse_answer(&hs100uk).unwrap();
        assert_eq!((a.http_port, a.login_version), (80, 1));
        // Finding 11: no `lv` was read as login version 1 (the password, reversibly encoded,
        // to whatever answered the probe). AES takes 2 then; 1 only for a trusted device.
        assert_eq!(a.lv, None);
        assert_eq!(a.aes_login_version(false), 2);
        assert_eq!(a.aes_login_version(true), 2);
        let v1 = parse_answer(&answer(
            json!({"device_id": "8007", "device_type": "SMART.KASAPLUG",
            "mgt_encrypt_schm": {"encrypt_type": "AES", "lv": 1}}),
        ))
        .unwrap();
        assert_eq!(
            (v1.aes_login_version(false), v1.aes_login_version(true)),
            (2, 1)
        );
        assert_eq!(
            a.transports().unwrap(),
            vec![Transport::Klap, Transport::KlapV2]
        );

        let ep25 = answer(json!({"device_id": "8022", "device_type": "SMART.KASAPLUG",
            "encrypt_info": {"sym_schm": "AES"}, "encrypt_type": ["1", "2"]}));
        let a = parse_answer(&ep25).unwrap();
        assert_eq!(
            a.login_version, 2,
            "lv falls back to the largest listed encrypt_type"
        );
        assert_eq!(a.transports().unwrap(), vec![Transport::Aes]);

        let silent = answer(json!({"device_id": "8033", "device_type": "SMART.TAPOPLUG"}));
        let t = parse_answer(&silent).unwrap().transports().unwrap();
        assert_eq!(t, vec![Transport::KlapV2, Transport::Aes], "fallback order");

        let tpap = answer(json!({"device_id": "9", "device_type": "SMART.TAPOPLUG",
            "mgt_encrypt_schm": {"encrypt_type": "TPAP"}}));
        assert!(
            parse_answer(&tpap)
                .unwrap()
                .transports()
                .unwrap_err()
                .contains("TPAP")
        );
        let cam = answer(json!({"device_id": "9", "device_type": "SMART.IPCAMERA",
            "mgt_encrypt_schm": {"encrypt_type": "AES", "is_support_https": true}}));
        assert!(parse_answer(&cam).unwrap().transports().is_err());
    }

    proptest::proptest! {
        #[test]
        fn any_datagram_is_an_answer_or_an_error_never_a_panic(
            d in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
        ) {
            let _ = checked_payload(&d);
            if let Ok(a) = parse_answer(&d) {
                let _ = a.transports();
            }
        }

        #[test]
        fn truncated_or_altered_answers_never_panic(cut in 0usize..400, flip in 0usize..400) {
            let mut d = answer(json!({"device_id": "8022", "device_type": "SMART.KASAPLUG",
                "mgt_encrypt_schm": {"encrypt_type": "KLAP", "http_port": 80, "lv": 2}}));
            if let Some(b) = d.get_mut(flip) {
                *b ^= 0x20;
            }
            d.truncate(cut.min(d.len()));
            let _ = parse_answer(&d).map(|a| a.transports());
            let _ = checked_payload(&d);
        }
    }

    #[test]
    fn damaged_answers_are_errors() {
        assert!(parse_answer(b"short").is_err());
        assert!(parse_answer(&datagram(1, 0, 0, b"{not json")).is_err());
        assert!(parse_answer(&datagram(1, 0, 0, br#"{"error_code":-1}"#)).is_err());
        assert!(parse_answer(&answer(json!({"device_type": "SMART.KASAPLUG"}))).is_err());
        assert!(parse_answer(&answer(json!([1, 2]))).is_err());
        let huge =
            answer(json!({"device_id": "x", "mgt_encrypt_schm": {"http_port": 70000, "lv": 999}}));
        let a = parse_answer(&huge).unwrap();
        assert_eq!(
            (a.http_port, a.login_version),
            (80, 1),
            "out-of-range values fall back"
        );
    }
}
