//! Routing through the cluster map: which [`Link`] reaches the home of a user.
//! One link per store address, shared by every island that names it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use common::cluster::ClusterMap;
use rustls::pki_types::ServerName;

use crate::links::Link;

#[derive(Debug, thiserror::Error)]
#[error("island {island:?}: server_name {name:?} is not a valid DNS name or IP address")]
pub struct BadServerName {
    pub island: String,
    pub name: String,
}

pub struct Router {
    map: ClusterMap,
    links: Vec<Arc<Link>>,
    /// For each island of the map, in order, its index in `links`.
    island_link: Vec<usize>,
}

impl Router {
    pub fn new(map: ClusterMap) -> Result<Router, BadServerName> {
        let mut links: Vec<Arc<Link>> = Vec::new();
        let mut by_addr: HashMap<SocketAddr, usize> = HashMap::new();
        let mut island_link = Vec::with_capacity(map.islands.len());
        for isl in &map.islands {
            let i = match by_addr.get(&isl.primary) {
                Some(&i) => i,
                None => {
                    let name = ServerName::try_from(isl.server_name.clone()).map_err(|_| {
                        BadServerName {
                            island: isl.name.clone(),
                            name: isl.server_name.clone(),
                        }
                    })?;
                    links.push(Arc::new(Link::new(isl.primary, name)));
                    by_addr.insert(isl.primary, links.len() - 1);
                    links.len() - 1
                }
            };
            island_link.push(i);
        }
        Ok(Router {
            map,
            links,
            island_link,
        })
    }

    /// The link to the home of `user` (a valid user id).
    pub fn home(&self, user: &str) -> &Arc<Link> {
        let f = self.map.fragment(user);
        let i = self
            .map
            .islands
            .iter()
            .position(|i| i.fragments[0] <= f && f <= i.fragments[1])
            .expect("a validated map owns every fragment");
        &self.links[self.island_link[i]]
    }

    pub fn links(&self) -> &[Arc<Link>] {
        &self.links
    }

    pub fn epoch(&self) -> u64 {
        self.map.epoch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn islands_sharing_a_primary_share_a_link() {
        let map: ClusterMap = toml::from_str(
            r#"epoch = 3
fragments = 4
hash_seed = "00112233445566778899aabbccddeeff"
[[island]]
name = "a"
primary = "127.0.0.1:1"
fragments = [0, 1]
[[island]]
name = "b"
primary = "127.0.0.1:1"
fragments = [2, 2]
[[island]]
name = "c"
primary = "127.0.0.1:2"
fragments = [3, 3]
"#,
        )
        .unwrap();
        map.validate().unwrap();
        let r = Router::new(map.clone()).unwrap();
        assert_eq!(r.links().len(), 2);
        assert_eq!(r.epoch(), 3);
        for i in 0..200 {
            let u = format!("user{i}");
            assert_eq!(r.home(&u).addr, map.home(&u).primary);
        }
    }
}
