//! ICE helpers for the signalling tests: reading the sdpfrag of a PATCH answer, candidate
//! addresses, and a minimal STUN client to ask the server's ICE agent which credentials it takes.

#![allow(dead_code)]

use std::net::SocketAddr;

use gstreamer_sdp as gst_sdp;

/// What an ICE-restart fragment says: (ufrag, pwd, candidates by section index).
pub fn read_fragment(body: &str) -> (String, String, Vec<(u32, String)>) {
    let text = format!("v=0\r\no=- 0 0 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n{body}");
    let msg =
        gst_sdp::SDPMessage::parse_buffer(text.as_bytes()).expect("the 200 body is an sdpfrag");
    let ufrag = msg
        .medias()
        .find_map(|m| m.attribute_val("ice-ufrag"))
        .unwrap()
        .to_string();
    let pwd = msg
        .medias()
        .find_map(|m| m.attribute_val("ice-pwd"))
        .unwrap()
        .to_string();
    let candidates = msg
        .medias()
        .enumerate()
        .flat_map(|(i, m)| {
            m.attributes()
                .filter(|a| a.key() == "candidate")
                .map(move |a| (i as u32, format!("candidate:{}", a.value().unwrap())))
                .collect::<Vec<_>>()
        })
        .collect();
    (ufrag, pwd, candidates)
}

/// The address of a UDP IPv4 candidate (`candidate:...` attribute value).
pub fn udp_ipv4_address(candidate: &str) -> Option<SocketAddr> {
    let fields: Vec<&str> = candidate.split_whitespace().collect();
    if fields.len() < 6 || !fields[2].eq_ignore_ascii_case("udp") {
        return None;
    }
    let ip: std::net::Ipv4Addr = fields[4].parse().ok()?;
    Some(SocketAddr::new(ip.into(), fields[5].parse().ok()?))
}

/// Just enough STUN (RFC 8489) for the tests: a binding responder, and an ICE connectivity check
/// with short-term credentials.
pub mod stun {
    use std::net::{SocketAddr, UdpSocket};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use hmac::Mac;

    const COOKIE: u32 = 0x2112_A442;
    const BINDING_REQUEST: u16 = 0x0001;
    /// Binding success response.
    pub const BINDING_SUCCESS: u16 = 0x0101;

    fn crc32(data: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &byte in data {
            crc ^= byte as u32;
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    fn header(kind: u16, txid: &[u8]) -> Vec<u8> {
        let mut msg = Vec::with_capacity(128);
        msg.extend_from_slice(&kind.to_be_bytes());
        msg.extend_from_slice(&0u16.to_be_bytes());
        msg.extend_from_slice(&COOKIE.to_be_bytes());
        msg.extend_from_slice(txid);
        msg
    }

    fn attribute(msg: &mut Vec<u8>, kind: u16, value: &[u8]) {
        msg.extend_from_slice(&kind.to_be_bytes());
        msg.extend_from_slice(&(value.len() as u16).to_be_bytes());
        msg.extend_from_slice(value);
        while !msg.len().is_multiple_of(4) {
            msg.push(0);
        }
    }

    /// Sets the length field as if an attribute of `extra` bytes followed.
    fn set_length(msg: &mut [u8], extra: usize) {
        let len = (msg.len() - 20 + extra) as u16;
        msg[2..4].copy_from_slice(&len.to_be_bytes());
    }

    fn fingerprint(msg: &mut Vec<u8>) {
        set_length(msg, 8);
        let crc = crc32(msg) ^ 0x5354_554E;
        attribute(msg, 0x8028, &crc.to_be_bytes());
    }

    /// Sends an ICE connectivity check (USERNAME, PRIORITY, ICE-CONTROLLING, MESSAGE-INTEGRITY,
    /// FINGERPRINT) to `to` and returns the response's message type, if one came within 2 s.
    pub fn check(to: SocketAddr, username: &str, password: &str) -> Option<u16> {
        let txid: [u8; 12] = rand_txid();
        let mut msg = header(BINDING_REQUEST, &txid);
        attribute(&mut msg, 0x0006, username.as_bytes());
        attribute(&mut msg, 0x0024, &0x6e00_01ffu32.to_be_bytes());
        attribute(&mut msg, 0x802A, &0x0123_4567_89ab_cdefu64.to_be_bytes());
        set_length(&mut msg, 24);
        let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(password.as_bytes()).unwrap();
        mac.update(&msg);
        attribute(&mut msg, 0x0008, &mac.finalize().into_bytes());
        fingerprint(&mut msg);
        let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let mut buf = [0u8; 1500];
        // A few tries: UDP, and libnice may be busy.
        for _ in 0..4 {
            socket.send_to(&msg, to).unwrap();
            while let Ok((n, _)) = socket.recv_from(&mut buf) {
                if n >= 20 && buf[8..20] == txid {
                    return Some(u16::from_be_bytes([buf[0], buf[1]]));
                }
            }
        }
        None
    }

    fn rand_txid() -> [u8; 12] {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let mut txid = [0u8; 12];
        txid.copy_from_slice(&nanos.to_be_bytes()[4..16]);
        txid
    }

    /// A STUN server answering binding requests with the sender's address.
    pub struct Responder {
        /// Where it listens.
        pub addr: SocketAddr,
        requests: Arc<AtomicUsize>,
    }

    impl Responder {
        /// Listens on `ip` in a thread that lives as long as the test process.
        pub fn start(ip: std::net::IpAddr) -> Responder {
            let socket = UdpSocket::bind((ip, 0)).unwrap();
            let addr = socket.local_addr().unwrap();
            let requests = Arc::new(AtomicUsize::new(0));
            let count = requests.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 1500];
                while let Ok((n, from)) = socket.recv_from(&mut buf) {
                    if n < 20 || u16::from_be_bytes([buf[0], buf[1]]) != BINDING_REQUEST {
                        continue;
                    }
                    count.fetch_add(1, Ordering::Relaxed);
                    let mut msg = header(BINDING_SUCCESS, &buf[8..20]);
                    attribute(&mut msg, 0x0020, &xor_address(from));
                    fingerprint(&mut msg);
                    let _ = socket.send_to(&msg, from);
                }
            });
            Responder { addr, requests }
        }

        /// Binding requests seen so far.
        pub fn requests(&self) -> usize {
            self.requests.load(Ordering::Relaxed)
        }
    }

    fn xor_address(addr: SocketAddr) -> Vec<u8> {
        let mut value = vec![0u8];
        let port = addr.port() ^ (COOKIE >> 16) as u16;
        match addr {
            SocketAddr::V4(v4) => {
                value.push(0x01);
                value.extend_from_slice(&port.to_be_bytes());
                let ip = u32::from(*v4.ip()) ^ COOKIE;
                value.extend_from_slice(&ip.to_be_bytes());
            }
            SocketAddr::V6(_) => unreachable!("the responder listens on IPv4"),
        }
        value
    }
}
