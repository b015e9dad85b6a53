//! The TAP device: opening it (the kernel creates it if it does not exist),
//! giving it an address with `ip`, and the two threads that move frames
//! between it and the session's channels.
//!
//! A TAP device snet created is not persistent: it goes away when its last
//! descriptor closes, that is when `snet live` exits. A device created
//! beforehand (`ip tuntap add dev NAME mode tap user $USER`) stays.

use std::io::ErrorKind;
use std::net::IpAddr;
use std::process::Command;
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};

use super::Input;

/// Largest frame read from the device in one go.
const READ_BUFFER: usize = 65536;

/// An open TAP device.
#[derive(Debug)]
pub struct Tap {
    iface: Arc<tun_tap::Iface>,
    /// Its name.
    pub name: String,
    /// Whether it existed before snet opened it (it then stays afterwards).
    pub existed: bool,
}

/// Checks an interface name as Linux does: 1 to 15 characters, none of
/// them `/`, `:`, `%` or white space, and not `.` or `..`.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 15 {
        return Err(format!(
            "--tap {name:?}: a network interface name has 1 to 15 characters"
        ));
    }
    if name == "." || name == ".." {
        return Err(format!("--tap {name}: not a valid interface name"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| c.is_whitespace() || matches!(c, '/' | ':' | '%'))
    {
        return Err(format!(
            "--tap {name:?}: an interface name cannot contain {c:?}"
        ));
    }
    Ok(())
}

/// Opens (and if need be creates) TAP device `name`, without packet
/// information: whole Ethernet frames, without FCS.
pub fn open(name: &str) -> Result<Tap, String> {
    check_name(name)?;
    let existed = std::path::Path::new("/sys/class/net").join(name).exists();
    match tun_tap::Iface::without_packet_info(name, tun_tap::Mode::Tap) {
        Ok(iface) => Ok(Tap {
            name: iface.name().to_string(),
            iface: Arc::new(iface),
            existed,
        }),
        Err(e) => Err(match e.kind() {
            ErrorKind::PermissionDenied => format!(
                "cannot open TAP device {name}: needs root or CAP_NET_ADMIN ({e}); run snet with sudo, or create the device for your user first: sudo ip tuntap add dev {name} mode tap user $USER"
            ),
            ErrorKind::NotFound => format!(
                "cannot open TAP device {name}: /dev/net/tun is missing ({e}); load the tun module (sudo modprobe tun)"
            ),
            ErrorKind::ResourceBusy => {
                format!("cannot open TAP device {name}: another program has it open ({e})")
            }
            ErrorKind::InvalidInput if existed => format!(
                "cannot open TAP device {name}: an interface of that name exists and is not a TAP device without packet information ({e}); choose another name"
            ),
            _ => format!("cannot open TAP device {name}: {e}"),
        }),
    }
}

/// Checks an `ADDRESS/LENGTH` such as `198.18.0.1/15`; returns the address
/// and the prefix length.
pub fn parse_cidr(text: &str) -> Result<(IpAddr, u8), String> {
    let bad = || {
        format!(
            "--tap-address {text}: write an address and a prefix length, e.g. 198.18.0.1/15 or 2001:db8::1/64"
        )
    };
    let (a, len) = text.trim().split_once('/').ok_or_else(bad)?;
    let a: IpAddr = a.parse().map_err(|_| bad())?;
    let len: u8 = len.parse().map_err(|_| bad())?;
    let most = if a.is_ipv4() { 32 } else { 128 };
    if len > most {
        return Err(format!(
            "--tap-address {text}: the prefix length is at most {most}"
        ));
    }
    Ok((a, len))
}

/// Whether `ip` lies in `net`/`len`.
pub fn contains(net: IpAddr, len: u8, ip: IpAddr) -> bool {
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(i)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            u32::from(n) & mask == u32::from(i) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(i)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            u128::from(n) & mask == u128::from(i) & mask
        }
        _ => false,
    }
}

/// Runs `ip ARGS`; `Err` with its message when it cannot run or fails.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run `ip {}`: {e} (install iproute2)", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Gives the device `cidr` (`198.18.0.1/15`), sets its MTU and brings it
/// up, with the `ip` command.
pub fn configure(name: &str, cidr: &str, mtu: u32) -> Result<(), String> {
    parse_cidr(cidr)?;
    ip(&["addr", "add", cidr.trim(), "dev", name])?;
    ip(&["link", "set", "dev", name, "mtu", &mtu.to_string(), "up"])
}

impl Tap {
    /// Starts the reader thread: every frame read goes to `to_session` as
    /// [`Input::Frame`]; a read error ends it with [`Input::TapFailed`].
    /// It blocks in `read`, so it ends with the process (or when the
    /// session's channel is gone and a frame arrives).
    pub fn spawn_reader(&self, to_session: Sender<Input>) -> std::io::Result<()> {
        let iface = self.iface.clone();
        std::thread::Builder::new()
            .name("tap-reader".into())
            .spawn(move || {
                let mut buf = vec![0u8; READ_BUFFER];
                loop {
                    match iface.recv(&mut buf) {
                        Ok(n) => {
                            if to_session.send(Input::Frame(buf[..n].to_vec())).is_err() {
                                return;
                            }
                        }
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        Err(e) => {
                            let _ = to_session.send(Input::TapFailed(e.to_string()));
                            return;
                        }
                    }
                }
            })
            .map(|_| ())
    }

    /// Starts the writer thread: writes every frame from `frames` to the
    /// device, until the channel closes. Write errors (the link is down)
    /// drop the frame, as a cable would.
    pub fn spawn_writer(
        &self,
        frames: Receiver<Vec<u8>>,
    ) -> std::io::Result<std::thread::JoinHandle<u64>> {
        let iface = self.iface.clone();
        std::thread::Builder::new()
            .name("tap-writer".into())
            .spawn(move || {
                let mut failed = 0u64;
                for f in frames {
                    if iface.send(&f).is_err() {
                        failed += 1;
                    }
                }
                failed
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names_follow_the_kernel_rules() {
        assert!(check_name("snet0").is_ok());
        assert!(check_name("a23456789012345").is_ok());
        assert!(
            check_name("a234567890123456")
                .unwrap_err()
                .contains("1 to 15")
        );
        assert!(check_name("").is_err());
        assert!(check_name("..").is_err());
        assert!(check_name("tap/0").unwrap_err().contains("'/'"));
        assert!(check_name("tap 0").is_err());
        assert!(check_name("tap%d").is_err());
    }

    #[test]
    fn addresses_take_a_prefix_length() {
        assert_eq!(
            parse_cidr("198.18.0.1/15").unwrap(),
            ("198.18.0.1".parse().unwrap(), 15)
        );
        assert!(parse_cidr("2001:db8::1/64").is_ok());
        assert!(
            parse_cidr("198.18.0.1")
                .unwrap_err()
                .contains("prefix length")
        );
        assert!(
            parse_cidr("198.18.0.1/33")
                .unwrap_err()
                .contains("at most 32")
        );
        assert!(parse_cidr("nonsense/8").is_err());
        let (net, len) = parse_cidr("198.18.0.1/16").unwrap();
        assert!(contains(net, len, "198.18.0.10".parse().unwrap()));
        assert!(contains(net, len, "198.18.255.1".parse().unwrap()));
        assert!(!contains(net, len, "198.19.0.1".parse().unwrap()));
        assert!(contains(net, 15, "198.19.0.1".parse().unwrap()));
        assert!(!contains(net, len, "2001:db8::10".parse().unwrap()));
    }
}
