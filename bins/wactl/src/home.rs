//! `wactl home`: which island is the home of a user, as the deployment's
//! cluster map says (`ClusterMap::home`, the one place that decides it).

use anyhow::Context;
use common::cluster::ClusterMap;

use crate::cli::HomeArgs;

pub(crate) fn run(args: &HomeArgs) -> anyhow::Result<()> {
    let path = args.dir.dir.join("cluster.toml");
    let map = ClusterMap::load(&path).with_context(|| {
        format!(
            "cannot read the cluster map (run `wactl up --dir {}` first)",
            args.dir.dir.display()
        )
    })?;
    for user in &args.users {
        let island = map.home(user);
        println!(
            "{user}: fragment {}, {} (primary {}), epoch {}",
            map.fragment(user),
            island.name,
            island.primary,
            map.epoch
        );
    }
    Ok(())
}
