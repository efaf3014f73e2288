//! A TCP relay to a broker that can turn into a black hole: while dark, bytes in both directions
//! are read and thrown away, and the connection stays open, as with a Wi-Fi link that went
//! silent. Nothing reaches the broker and no acknowledgement comes back, so a client only
//! notices through its keep-alive.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

pub struct Blackhole {
    pub port: u16,
    dark: Arc<AtomicBool>,
}

impl Blackhole {
    /// Relays connections on a free loopback port to `127.0.0.1:to`.
    pub fn start(to: u16) -> Blackhole {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let dark = Arc::new(AtomicBool::new(false));
        let d = dark.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let Ok(broker) = TcpStream::connect(("127.0.0.1", to)) else { continue };
                relay(client.try_clone().unwrap(), broker.try_clone().unwrap(), d.clone());
                relay(broker, client, d.clone());
            }
        });
        Blackhole { port, dark }
    }

    /// While `dark`, everything in flight is lost.
    pub fn set_dark(&self, dark: bool) {
        self.dark.store(dark, Ordering::SeqCst);
    }
}

fn relay(mut from: TcpStream, mut to: TcpStream, dark: Arc<AtomicBool>) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 << 10];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) if !dark.load(Ordering::SeqCst) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                Ok(_) => {} // swallowed
            }
        }
        to.shutdown(std::net::Shutdown::Both).ok();
    });
}
