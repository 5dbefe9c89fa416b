//! Which targets show which registries, computed once per config.

use std::collections::{BTreeMap, BTreeSet};

use crate::config::Settings;
use crate::ecr::token::GroupKey;

/// Which targets show which registries, computed once per config: no rescans per event.
#[derive(Debug, Default)]
pub(super) struct Plan {
    pub(super) group_of_host: BTreeMap<String, GroupKey>,
    pub(super) hosts_of_group: BTreeMap<GroupKey, Vec<String>>,
    pub(super) targets_of_group: BTreeMap<GroupKey, BTreeSet<usize>>,
    pub(super) groups_of_target: Vec<BTreeSet<GroupKey>>,
}

impl Plan {
    pub(super) fn of(settings: &Settings) -> Plan {
        let mut plan = Plan {
            groups_of_target: vec![BTreeSet::new(); settings.targets.len()],
            ..Plan::default()
        };
        for r in &settings.registries {
            let key = GroupKey::of(r);
            plan.group_of_host.insert(r.host.clone(), key.clone());
            plan.hosts_of_group
                .entry(key.clone())
                .or_default()
                .push(r.host.clone());
            for (i, t) in settings.targets.iter().enumerate() {
                if r.targets.covers(&t.name) {
                    plan.targets_of_group
                        .entry(key.clone())
                        .or_default()
                        .insert(i);
                    plan.groups_of_target[i].insert(key.clone());
                }
            }
        }
        plan
    }
}
