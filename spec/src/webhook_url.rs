//! Webhook endpoint URLs that cannot turn the server against its own network (server-side
//! request forgery): `https` only, no credentials, and a host that resolves only to public
//! addresses. Checked at registration, and again at each delivery (DNS can change): there the
//! form here, and the names by the delivery client's resolver, which hands out public
//! addresses only (`webhooks::client`).
//! The server's `--webhooks-allow-private` (on in `dev`, and always in the mock) lifts the
//! address and scheme rules for local work.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use url::Url;

/// What a URL must be, and how its names are resolved.
#[derive(Debug, Clone, Default)]
pub struct UrlPolicy {
    /// `http` and non-public addresses allowed (local development only).
    pub allow_private: bool,
    /// Names resolved to these addresses instead of by the system, as curl's `--resolve`
    /// does: how a test makes a name change its addresses between registration and delivery.
    pub resolve: Arc<BTreeMap<String, Vec<IpAddr>>>,
}

impl UrlPolicy {
    /// The addresses `host` resolves to, with `port`.
    pub async fn lookup(&self, host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
        if let Some(addresses) = self.resolve.get(host) {
            return Ok(addresses.iter().map(|ip| SocketAddr::new(*ip, port)).collect());
        }
        Ok(tokio::net::lookup_host((host, port)).await?.collect())
    }
}

/// The URL's own form: `https` (or `http` when private addresses are allowed), no
/// credentials, a host, and a host written as an address a public one (no resolver sees it).
/// The check at each delivery: the delivery client's resolver judges the addresses of names.
pub fn check_form(policy: &UrlPolicy, text: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|error| format!("must be an absolute URL ({error})"))?;
    match url.scheme() {
        "https" => {}
        "http" if policy.allow_private => {}
        _ => return Err("must be an https URL".to_string()),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry a user name or password".to_string());
    }
    let written = match url.host().ok_or("must name a host")? {
        url::Host::Ipv4(ip) => Some(IpAddr::V4(ip)),
        url::Host::Ipv6(ip) => Some(IpAddr::V6(ip)),
        url::Host::Domain(_) => None,
    };
    match written {
        Some(ip) if !policy.allow_private => refuse(ip).map(|()| url),
        _ => Ok(url),
    }
}

/// The URL's form, and every address its host resolves to now allowed: the check at
/// registration.
pub async fn check(policy: &UrlPolicy, text: &str) -> Result<Url, String> {
    let url = check_form(policy, text)?;
    let host = url.host_str().ok_or("must name a host")?;
    let port = url.port_or_known_default().ok_or("must name a port")?;
    // `[::1]` is written with brackets in a URL, not in a lookup.
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let addresses = policy
        .lookup(host, port)
        .await
        .map_err(|_| format!("has a host, {host}, that does not resolve"))?;
    if addresses.is_empty() {
        return Err(format!("has a host, {host}, that does not resolve"));
    }
    if !policy.allow_private {
        for address in &addresses {
            refuse(address.ip())?;
        }
    }
    Ok(url)
}

/// The issue with an address that is not public: its kind, never the address itself, which
/// would tell whoever registers a name what the server's own DNS makes of it.
fn refuse(ip: IpAddr) -> Result<(), String> {
    match special_purpose(ip) {
        Some(kind) => Err(format!(
            "resolves to a {kind} address; webhooks go to public addresses only"
        )),
        None => Ok(()),
    }
}

/// What kind of special-purpose address this is (IANA's registries), `None` for a public one.
pub fn special_purpose(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(ip) => special_v4(ip),
        IpAddr::V6(ip) => special_v6(ip),
    }
}

fn special_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        _ if ip.is_loopback() => "loopback",
        _ if ip.is_private() => "private",
        _ if ip.is_link_local() => "link-local",
        _ if ip.is_multicast() => "multicast",
        _ if ip.is_broadcast() => "broadcast",
        _ if ip.is_documentation() => "documentation",
        (0, _, _) => "this-network",
        (100, 64..=127, _) => "shared (carrier-grade NAT)",
        (192, 0, 0) => "IETF protocol assignment",
        (198, 18..=19, _) => "benchmarking",
        (240..=255, _, _) => "reserved",
        _ => return None,
    })
}

fn special_v6(ip: Ipv6Addr) -> Option<&'static str> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return special_v4(v4);
    }
    let segments = ip.segments();
    Some(match segments {
        _ if ip.is_loopback() => "loopback",
        _ if ip.is_unspecified() => "unspecified",
        _ if ip.is_multicast() => "multicast",
        [0xfe80..=0xfebf, ..] => "link-local",
        [0xfc00..=0xfdff, ..] => "unique local (private)",
        [0x2001, 0x0db8, ..] => "documentation",
        // NAT64 (64:ff9b::/96) reaches the IPv4 address it embeds: judge that one.
        [0x0064, 0xff9b, 0, 0, 0, 0, ..] => {
            let [.., high, low] = segments;
            let v4 = Ipv4Addr::from(((high as u32) << 16) | low as u32);
            return special_v4(v4);
        }
        [0x0100, 0, 0, 0, ..] => "discard-only",
        [0x2001, 0x0000..=0x01ff, ..] => "IETF protocol assignment",
        [0x2002, ..] => "6to4",
        _ if segments[0] & 0xe000 != 0x2000 => "not global unicast",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_pass() {
        for special in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "224.0.0.1",
            "0.0.0.0",
            "100.64.0.1",
            "198.18.0.1",
            "255.255.255.255",
            "240.0.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "64:ff9b::a00:1",
            "2001:db8::1",
        ] {
            assert!(special_purpose(special.parse().unwrap()).is_some(), "{special}");
        }
        for public in ["93.184.215.14", "8.8.8.8", "2606:4700::1111", "64:ff9b::808:808"] {
            assert_eq!(special_purpose(public.parse().unwrap()), None, "{public}");
        }
    }

    #[tokio::test]
    async fn urls_are_checked_before_anything_is_sent() {
        let strict = UrlPolicy::default();
        let issue = |text: &'static str| {
            let strict = strict.clone();
            async move { check(&strict, text).await.unwrap_err() }
        };
        assert_eq!(issue("http://93.184.215.14/hook").await, "must be an https URL");
        assert_eq!(
            issue("https://user:pw@93.184.215.14/").await,
            "must not carry a user name or password"
        );
        assert!(issue("https://127.0.0.1/hook").await.contains("loopback"));
        assert!(issue("https://[::1]:8443/hook").await.contains("loopback"));
        assert!(issue("https://localhost/hook").await.contains("loopback"));
        assert!(issue("not a url").await.starts_with("must be an absolute URL"));
        let url = check(&strict, "https://93.184.215.14/hook").await.unwrap();
        assert_eq!(url.as_str(), "https://93.184.215.14/hook");
        // At delivery, a name is left to the client's resolver; an address is judged at once.
        assert!(check_form(&strict, "https://hooks.example.com/").is_ok());
        assert!(check_form(&strict, "https://10.0.0.1/")
            .unwrap_err()
            .contains("private"));
        let local = UrlPolicy {
            allow_private: true,
            ..UrlPolicy::default()
        };
        assert!(check(&local, "http://127.0.0.1:9/hook").await.is_ok());
    }

    #[tokio::test]
    async fn names_given_to_the_policy_resolve_as_given() {
        let policy = UrlPolicy {
            resolve: std::sync::Arc::new(BTreeMap::from([(
                "hooks.test".to_string(),
                vec!["10.0.0.7".parse().unwrap()],
            )])),
            ..UrlPolicy::default()
        };
        let issue = check(&policy, "https://hooks.test/hook").await.unwrap_err();
        assert_eq!(
            issue,
            "resolves to a private address; webhooks go to public addresses only"
        );
        assert!(!issue.contains("10.0.0.7"), "the address is not named: {issue}");
    }
}
