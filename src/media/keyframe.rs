//! Does an RTP payload start a decodable picture? Used to open a new viewer's video gate.

/// The key-frame test for an encoding name; `None` where every packet is a fine start (audio).
pub fn detector(encoding: &str) -> Option<fn(&[u8]) -> bool> {
    match encoding {
        "H264" => Some(h264_key),
        "VP8" => Some(vp8_key),
        "VP9" => Some(vp9_key),
        _ => None,
    }
}

/// H.264 (RFC 6184): an IDR or SPS NAL unit, alone, inside a STAP-A, or starting a FU-A.
pub fn h264_key(payload: &[u8]) -> bool {
    let Some(&first) = payload.first() else {
        return false;
    };
    match first & 0x1f {
        5 | 7 => true,
        24 => {
            let mut rest = &payload[1..];
            while rest.len() > 2 {
                let size = u16::from_be_bytes([rest[0], rest[1]]) as usize;
                if let Some(&nal) = rest.get(2) {
                    if matches!(nal & 0x1f, 5 | 7) {
                        return true;
                    }
                }
                rest = rest.get(2 + size..).unwrap_or(&[]);
            }
            false
        }
        28 => payload
            .get(1)
            .is_some_and(|h| h & 0x80 != 0 && matches!(h & 0x1f, 5 | 7)),
        _ => false,
    }
}

/// VP8 (RFC 7741): start of partition 0 of a frame whose P bit is clear.
pub fn vp8_key(payload: &[u8]) -> bool {
    let Some(&desc) = payload.first() else {
        return false;
    };
    let start = desc & 0x10 != 0 && desc & 0x07 == 0;
    if !start {
        return false;
    }
    let mut offset = 1;
    if desc & 0x80 != 0 {
        let Some(&ext) = payload.get(1) else {
            return false;
        };
        offset += 1;
        if ext & 0x80 != 0 {
            offset += if payload.get(offset).is_some_and(|b| b & 0x80 != 0) {
                2
            } else {
                1
            };
        }
        if ext & 0x40 != 0 {
            offset += 1;
        }
        if ext & 0x30 != 0 {
            offset += 1;
        }
    }
    payload.get(offset).is_some_and(|b| b & 0x01 == 0)
}

/// VP9 (RFC 9628): start of a frame (B bit) that is not inter-predicted (P bit clear).
pub fn vp9_key(payload: &[u8]) -> bool {
    payload
        .first()
        .is_some_and(|d| d & 0x08 != 0 && d & 0x40 == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn h264_forms() {
        assert!(h264_key(&[0x67, 1, 2]));
        assert!(h264_key(&[0x65]));
        assert!(!h264_key(&[0x41, 0]));
        // STAP-A with SPS then PPS.
        assert!(h264_key(&[0x78, 0, 2, 0x67, 0, 0, 1, 0x68]));
        assert!(!h264_key(&[0x78, 0, 1, 0x68]));
        // FU-A start of an IDR vs a continuation.
        assert!(h264_key(&[0x7c, 0x85, 0]));
        assert!(!h264_key(&[0x7c, 0x05, 0]));
        assert!(!h264_key(&[]));
        assert!(!h264_key(&[0x78, 0xff, 0xff]));
    }

    #[test]
    fn vp8_and_vp9() {
        assert!(vp8_key(&[0x10, 0x00]));
        assert!(!vp8_key(&[0x10, 0x01]));
        assert!(!vp8_key(&[0x00, 0x00]));
        // X bit with a 15-bit picture id.
        assert!(vp8_key(&[0x90, 0x80, 0x81, 0x02, 0x00]));
        assert!(vp9_key(&[0x08]));
        assert!(!vp9_key(&[0x48]));
        assert!(!vp9_key(&[]));
    }
}
