//! Who an upload is counted against: the client's address (the peer, or what a
//! trusted proxy says), and how many uploads each address has streaming at once.
//! The upload path's rate limit (`api::limits`) counts by the same address.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;

use axum::extract::ConnectInfo;
use axum::http::{HeaderName, Request};

/// The address uploads are counted against: the peer, or the last entry a trusted
/// proxy wrote into its header (entries before it come from the client and can be forged).
#[derive(Debug, Clone)]
pub struct ClientAddress {
    trusted_header: Option<HeaderName>,
}

impl ClientAddress {
    /// Fails on a header name that is not one (checked at start, not per request).
    pub fn new(trusted_header: Option<&str>) -> anyhow::Result<Self> {
        let trusted_header = trusted_header
            .map(|name| {
                HeaderName::try_from(name).map_err(|_| {
                    anyhow::anyhow!("--trusted-proxy-header: “{name}” is not a header name")
                })
            })
            .transpose()?;
        Ok(Self { trusted_header })
    }

    /// The key an upload is counted against. IPv6 clients are counted by /64, the
    /// block a single subscriber usually holds.
    pub fn of<T>(&self, request: &Request<T>) -> Option<IpAddr> {
        self.address(request).map(|address| match address {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
            },
            v4 => v4,
        })
    }

    fn address<T>(&self, request: &Request<T>) -> Option<IpAddr> {
        let from_proxy = self.trusted_header.as_ref().and_then(|name| {
            let value = request.headers().get_all(name).iter().next_back()?;
            let last = value.to_str().ok()?.rsplit(',').next()?.trim();
            // `X-Forwarded-For` holds bare addresses; some proxies add a port.
            last.parse::<IpAddr>()
                .ok()
                .or_else(|| last.parse::<SocketAddr>().ok().map(|a| a.ip()))
        });
        from_proxy.or_else(|| {
            request
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map(|info| info.0.ip())
        })
    }
}

/// Uploads in progress per client address, so that a few slow clients cannot hold
/// every upload slot (the body timeout only catches bodies that stop entirely).
#[derive(Debug, Default)]
pub struct UploadsInProgress {
    by_address: Mutex<HashMap<IpAddr, usize>>,
}

/// One upload counted in; counted out when dropped.
pub struct InProgress<'a> {
    uploads: &'a UploadsInProgress,
    address: IpAddr,
}

impl UploadsInProgress {
    /// Counts an upload from `address` in, unless it already has `max` in progress.
    pub fn start(&self, address: IpAddr, max: usize) -> Option<InProgress<'_>> {
        let mut by_address = self.by_address.lock().unwrap_or_else(|e| e.into_inner());
        let count = by_address.entry(address).or_default();
        if *count >= max.max(1) {
            return None;
        }
        *count += 1;
        Some(InProgress {
            uploads: self,
            address,
        })
    }
}

impl Drop for InProgress<'_> {
    fn drop(&mut self) {
        let mut by_address = self
            .uploads
            .by_address
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(count) = by_address.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                by_address.remove(&self.address);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(peer: &str, forwarded: Option<&str>) -> Request<()> {
        let mut request = Request::builder();
        if let Some(forwarded) = forwarded {
            request = request.header("X-Forwarded-For", forwarded);
        }
        let mut request = request.body(()).unwrap();
        let peer: SocketAddr = peer.parse().unwrap();
        request.extensions_mut().insert(ConnectInfo(peer));
        request
    }

    fn key(client: &ClientAddress, peer: &str, forwarded: Option<&str>) -> String {
        client.of(&request(peer, forwarded)).unwrap().to_string()
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let peer = ClientAddress::new(None).unwrap();
        assert_eq!(
            key(&peer, "[2001:db8:1:2:aaaa::1]:9", None),
            "2001:db8:1:2::"
        );
        assert_eq!(
            key(&peer, "[2001:db8:1:2:bbbb::7]:9", None),
            "2001:db8:1:2::"
        );
        assert_eq!(key(&peer, "[2001:db8:1:3::1]:9", None), "2001:db8:1:3::");
        assert_eq!(key(&peer, "[::ffff:198.51.100.7]:9", None), "198.51.100.7");
        assert_eq!(key(&peer, "198.51.100.7:9", None), "198.51.100.7");
    }

    #[test]
    fn the_proxy_header_counts_only_when_trusted_and_only_its_last_entry() {
        let peer = ClientAddress::new(None).unwrap();
        assert_eq!(key(&peer, "10.0.0.1:9", Some("203.0.113.5")), "10.0.0.1");
        let proxied = ClientAddress::new(Some("X-Forwarded-For")).unwrap();
        let forged = Some("203.0.113.5, 198.51.100.7");
        assert_eq!(key(&proxied, "10.0.0.1:9", forged), "198.51.100.7");
        assert_eq!(
            key(&proxied, "10.0.0.1:9", Some("198.51.100.7:4711")),
            "198.51.100.7"
        );
        // No header (or garbage in it): the peer.
        assert_eq!(key(&proxied, "10.0.0.1:9", None), "10.0.0.1");
        assert_eq!(key(&proxied, "10.0.0.1:9", Some("unknown")), "10.0.0.1");
        assert!(ClientAddress::new(Some("not a header")).is_err());
    }
}
