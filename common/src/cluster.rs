//! The cluster map: islands, their nodes and fragment ranges, and the epoch.
//!
//! One TOML document that every node reads. `fragment(user) = siphash(seed,
//! user) mod fragments`; the seed is the cluster's own, so fragment placement is
//! independent of every other hash in the system (hash tables in the nodes, the
//! load balancer in front of the edges). A deployment on one machine is the same
//! map with one island that holds every fragment.
//!
//! ```toml
//! epoch = 1
//! fragments = 256
//! hash_seed = "00112233445566778899aabbccddeeff"
//!
//! [[island]]
//! name = "island-1"
//! primary = "127.0.0.1:7401"
//! server_name = "localhost"
//! fragments = [0, 255]
//! ```

use std::net::SocketAddr;
use std::path::Path;

use serde::Deserialize;
use siphasher::sip::SipHasher13;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClusterMap {
    /// Rises on every change of ownership (failover); nodes refuse older epochs.
    pub epoch: u64,
    /// Number of fragments, a power of two, fixed at cluster creation.
    pub fragments: u32,
    /// 128-bit hex seed of the fragment hash.
    pub hash_seed: String,
    #[serde(rename = "island")]
    pub islands: Vec<Island>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Island {
    pub name: String,
    /// Internal link address of the primary `wa-store`.
    pub primary: SocketAddr,
    /// Name in the primary's link certificate.
    #[serde(default = "default_server_name")]
    pub server_name: String,
    /// Link address of the secondary, if any (replication arrives with the
    /// cluster issue).
    #[serde(default)]
    pub secondary: Option<SocketAddr>,
    /// First and last fragment owned, inclusive.
    pub fragments: [u32; 2],
}

fn default_server_name() -> String {
    "localhost".into()
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cannot read cluster map {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("cluster map {path}: {source}")]
    Parse {
        path: String,
        source: toml::de::Error,
    },
    #[error("cluster map is invalid:\n  {}", .0.join("\n  "))]
    Invalid(Vec<String>),
}

impl ClusterMap {
    pub fn load(path: &Path) -> Result<Self, ClusterError> {
        let text = std::fs::read_to_string(path).map_err(|source| ClusterError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let map: ClusterMap = toml::from_str(&text).map_err(|source| ClusterError::Parse {
            path: path.display().to_string(),
            source,
        })?;
        map.validate()?;
        Ok(map)
    }

    /// A map with one island holding every fragment: the single-machine deployment.
    pub fn single(primary: SocketAddr, server_name: &str, seed: [u8; 16]) -> Self {
        ClusterMap {
            epoch: 1,
            fragments: 256,
            hash_seed: hex::encode(seed),
            islands: vec![Island {
                name: "island-1".into(),
                primary,
                server_name: server_name.into(),
                secondary: None,
                fragments: [0, 255],
            }],
        }
    }

    pub fn to_toml(&self) -> String {
        let mut s = format!(
            "epoch = {}\nfragments = {}\nhash_seed = \"{}\"\n",
            self.epoch, self.fragments, self.hash_seed
        );
        for i in &self.islands {
            s.push_str(&format!(
                "\n[[island]]\nname = \"{}\"\nprimary = \"{}\"\nserver_name = \"{}\"\nfragments = [{}, {}]\n",
                i.name, i.primary, i.server_name, i.fragments[0], i.fragments[1]
            ));
            if let Some(sec) = i.secondary {
                s.push_str(&format!("secondary = \"{sec}\"\n"));
            }
        }
        s
    }

    /// Reports every problem at once.
    pub fn validate(&self) -> Result<(), ClusterError> {
        let mut errs = Vec::new();
        if self.epoch == 0 {
            errs.push("epoch: must be at least 1".to_string());
        }
        if !self.fragments.is_power_of_two() {
            errs.push(format!(
                "fragments: {} is not a power of two",
                self.fragments
            ));
        }
        if self.seed().is_none() {
            errs.push("hash_seed: must be 32 hex digits".to_string());
        }
        if self.islands.is_empty() {
            errs.push("island: at least one island is needed".to_string());
        }
        let mut owner: Vec<Option<&str>> = vec![None; self.fragments as usize];
        for isl in &self.islands {
            let [a, b] = isl.fragments;
            if a > b || b >= self.fragments {
                errs.push(format!(
                    "island {:?}: fragments [{a}, {b}] is not a range within 0..{}",
                    isl.name, self.fragments
                ));
                continue;
            }
            for f in a..=b {
                if let Some(o) = owner[f as usize] {
                    errs.push(format!(
                        "island {:?}: fragment {f} is also owned by island {o:?}",
                        isl.name
                    ));
                    break;
                }
                owner[f as usize] = Some(&isl.name);
            }
        }
        if let Some(f) = owner.iter().position(Option::is_none)
            && !self.islands.is_empty()
        {
            errs.push(format!("fragment {f} is owned by no island"));
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(ClusterError::Invalid(errs))
        }
    }

    fn seed(&self) -> Option<[u8; 16]> {
        let v = hex::decode(&self.hash_seed).ok()?;
        v.try_into().ok()
    }

    /// The fragment of `user`.
    pub fn fragment(&self, user: &str) -> u32 {
        let seed = self.seed().expect("validated");
        let (k0, k1) = seed.split_at(8);
        let h = SipHasher13::new_with_keys(
            u64::from_le_bytes(k0.try_into().expect("8 bytes")),
            u64::from_le_bytes(k1.try_into().expect("8 bytes")),
        )
        .hash(user.as_bytes());
        (h & u64::from(self.fragments - 1)) as u32
    }

    /// The island whose primary is the home of `user`. This and
    /// [`ClusterMap::home_index`] are the one place that decides who a
    /// user's home is.
    pub fn home(&self, user: &str) -> &Island {
        &self.islands[self.home_index(user)]
    }

    /// The index in `islands` of the island that owns `user`'s fragment.
    pub fn home_index(&self, user: &str) -> usize {
        let f = self.fragment(user);
        self.islands
            .iter()
            .position(|i| i.owns(f))
            .expect("a validated map owns every fragment")
    }

    /// The island named `name`.
    pub fn island(&self, name: &str) -> Option<&Island> {
        self.islands.iter().find(|i| i.name == name)
    }
}

impl Island {
    /// Whether fragment `f` is in this island's range.
    pub fn owns(&self, f: u32) -> bool {
        self.fragments[0] <= f && f <= self.fragments[1]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(text: &str) -> Result<ClusterMap, String> {
        let m: ClusterMap = toml::from_str(text).map_err(|e| e.to_string())?;
        m.validate().map_err(|e| e.to_string())?;
        Ok(m)
    }

    #[test]
    fn single_round_trips_and_owns_everything() {
        let m = ClusterMap::single("127.0.0.1:7401".parse().unwrap(), "localhost", [7; 16]);
        let back = map(&m.to_toml()).unwrap();
        assert_eq!(back, m);
        for u in ["alice", "bob", "carol"] {
            assert!(m.fragment(u) < 256);
            assert_eq!(m.home(u).name, "island-1");
        }
    }

    #[test]
    fn fragments_spread_and_depend_on_seed() {
        let a = ClusterMap::single("127.0.0.1:1".parse().unwrap(), "x", [1; 16]);
        let b = ClusterMap::single("127.0.0.1:1".parse().unwrap(), "x", [2; 16]);
        let mut counts = [0u32; 256];
        let mut differ = 0;
        for i in 0..25_600 {
            let u = format!("user{i}");
            counts[a.fragment(&u) as usize] += 1;
            differ += u32::from(a.fragment(&u) != b.fragment(&u));
        }
        // 100 expected per fragment; a fair hash stays well inside [50, 160].
        assert!(counts.iter().all(|&c| (50..160).contains(&c)), "{counts:?}");
        assert!(
            differ > 25_000,
            "seed must change placement, {differ} differ"
        );
    }

    #[test]
    fn invalid_maps_name_every_problem() {
        let err = map(r#"epoch = 0
fragments = 100
hash_seed = "zz"
[[island]]
name = "a"
primary = "127.0.0.1:1"
fragments = [0, 50]
[[island]]
name = "b"
primary = "127.0.0.1:2"
fragments = [40, 60]
"#)
        .unwrap_err();
        for needle in [
            "epoch",
            "power of two",
            "hash_seed",
            "also owned",
            "owned by no island",
        ] {
            assert!(err.contains(needle), "{needle:?} missing from {err}");
        }
        assert!(
            map("epoch = 1\nfragments = 4\nhash_seed = \"00\"\nbogus = 1\n")
                .unwrap_err()
                .contains("bogus")
        );
    }
}
