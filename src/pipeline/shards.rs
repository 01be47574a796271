//! Which shard of a collector serves which tenant. Sticky: a tenant keeps its shard for life
//! (its clients are configured with that shard's endpoint), so adding or removing tenants never
//! moves another one. New tenants go to the least-full shard with room, or open a new shard
//! when every shard is full; a shard left empty is dropped, except shard 0, which always runs
//! (the platform's endpoint, and the one an unsharded collector had). Pure and deterministic.

use std::collections::{BTreeMap, BTreeSet};

/// A shard's index: stable for the shard's life, part of its objects' names.
pub type ShardIndex = u32;

/// The shards of one collector.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Assignment {
    /// Members of shard 0 and of every other non-empty shard, by index, in the order given.
    pub shards: BTreeMap<ShardIndex, Vec<String>>,
    /// Tenants that had no shard and were given one now (to be recorded).
    pub new: BTreeMap<String, ShardIndex>,
}

impl Assignment {
    /// The shard of a tenant, if it has one.
    pub fn shard_of(&self, tenant: &str) -> Option<ShardIndex> {
        self.shards
            .iter()
            .find(|(_, members)| members.iter().any(|m| m == tenant))
            .map(|(index, _)| *index)
    }
}

/// Assigns `members` (the tenants the collector serves, oldest first) to shards of at most
/// `max_per_shard`, keeping every `recorded` assignment. A recorded shard may exceed the
/// limit when the limit was lowered: its tenants stay, it just takes no new ones.
pub fn assign(
    recorded: &BTreeMap<String, ShardIndex>,
    members: &[String],
    max_per_shard: u32,
) -> Assignment {
    let max = max_per_shard.max(1) as usize;
    let mut assignment = Assignment::default();
    assignment.shards.insert(0, Vec::new());
    let mut unassigned = Vec::new();
    for member in members {
        match recorded.get(member) {
            Some(index) => assignment
                .shards
                .entry(*index)
                .or_default()
                .push(member.clone()),
            None => unassigned.push(member),
        }
    }
    for member in unassigned {
        let index = least_full_with_room(&assignment.shards, max)
            .unwrap_or_else(|| lowest_unused(&assignment.shards));
        assignment
            .shards
            .entry(index)
            .or_default()
            .push(member.clone());
        assignment.new.insert(member.clone(), index);
    }
    assignment
}

/// What each shard's durable record lists: every tenant recorded there that still exists
/// (served now or not: a tenant that leaves the region for a while comes back to its shard),
/// and the tenants assigned to it now. A shard listing no one has no record.
pub fn records(
    recorded: &BTreeMap<String, ShardIndex>,
    existing: &BTreeSet<&str>,
    new: &BTreeMap<String, ShardIndex>,
) -> BTreeMap<ShardIndex, BTreeSet<String>> {
    let mut records: BTreeMap<ShardIndex, BTreeSet<String>> = BTreeMap::new();
    let kept = recorded
        .iter()
        .filter(|(tenant, _)| existing.contains(tenant.as_str()));
    for (tenant, index) in kept.chain(new) {
        records.entry(*index).or_default().insert(tenant.clone());
    }
    records
}

/// The shard with the fewest members among those with room (the lowest index on a tie).
fn least_full_with_room(
    shards: &BTreeMap<ShardIndex, Vec<String>>,
    max: usize,
) -> Option<ShardIndex> {
    shards
        .iter()
        .filter(|(_, members)| members.len() < max)
        .min_by_key(|(index, members)| (members.len(), **index))
        .map(|(index, _)| *index)
}

/// The lowest index no shard uses: an emptied shard's index is reused before a new one.
fn lowest_unused(shards: &BTreeMap<ShardIndex, Vec<String>>) -> ShardIndex {
    (0..)
        .find(|index| !shards.contains_key(index))
        .unwrap_or(ShardIndex::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(prefix: &str, n: usize) -> Vec<String> {
        (0..n).map(|i| format!("{prefix}{i:04}")).collect()
    }

    fn sizes(a: &Assignment) -> Vec<(ShardIndex, usize)> {
        a.shards.iter().map(|(i, m)| (*i, m.len())).collect()
    }

    fn recorded(a: &Assignment) -> BTreeMap<String, ShardIndex> {
        a.shards
            .iter()
            .flat_map(|(i, members)| members.iter().map(move |m| (m.clone(), *i)))
            .collect()
    }

    #[test]
    fn records_keep_existing_tenants_add_new_ones_and_forget_deleted_ones() {
        let recorded = BTreeMap::from([
            ("away".to_owned(), 1), // exists, not served now
            ("gone".to_owned(), 1), // deleted
            ("kept".to_owned(), 0),
            ("last".to_owned(), 2), // deleted: its shard needs no record
        ]);
        let existing = BTreeSet::from(["away", "kept", "fresh"]);
        let new = BTreeMap::from([("fresh".to_owned(), 1)]);
        let records = records(&recorded, &existing, &new);
        let names = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        assert_eq!(
            records,
            BTreeMap::from([(0, names(&["kept"])), (1, names(&["away", "fresh"]))])
        );
    }

    #[test]
    fn tenants_fill_shards_up_to_the_limit_and_open_new_ones() {
        let a = assign(&BTreeMap::new(), &names("t", 450), 200);
        assert_eq!(sizes(&a), [(0, 200), (1, 200), (2, 50)]);
        assert_eq!(a.new.len(), 450);
    }

    #[test]
    fn adding_tenants_to_full_shards_opens_a_shard_and_moves_no_one() {
        let first = assign(&BTreeMap::new(), &names("t", 400), 200);
        let before = recorded(&first);
        let mut members = names("t", 400);
        members.extend(names("n", 50));
        let after = assign(&before, &members, 200);
        assert_eq!(sizes(&after), [(0, 200), (1, 200), (2, 50)]);
        for (tenant, shard) in &before {
            assert_eq!(after.shard_of(tenant), Some(*shard), "{tenant} moved");
        }
        assert_eq!(after.new.len(), 50);
        assert!(after.new.values().all(|s| *s == 2));
    }

    #[test]
    fn removing_tenants_moves_no_one_and_new_ones_fill_the_gap() {
        let first = recorded(&assign(&BTreeMap::new(), &names("t", 400), 200));
        // Half of shard 0 goes away.
        let members: Vec<String> = names("t", 400).into_iter().skip(100).collect();
        let after = assign(&first, &members, 200);
        assert_eq!(sizes(&after), [(0, 100), (1, 200)]);
        assert!(after.new.is_empty());
        for tenant in &members {
            assert_eq!(after.shard_of(tenant), first.get(tenant).copied());
        }
        let mut more = members.clone();
        more.extend(names("n", 10));
        let refilled = assign(&recorded(&after), &more, 200);
        assert!(
            refilled.new.values().all(|s| *s == 0),
            "the least-full shard"
        );
    }

    #[test]
    fn an_emptied_shard_is_dropped_and_its_index_reused() {
        let first = recorded(&assign(&BTreeMap::new(), &names("t", 450), 200));
        // Shard 1 empties.
        let members: Vec<String> = names("t", 450)
            .into_iter()
            .filter(|t| first[t] != 1)
            .collect();
        let after = assign(&first, &members, 200);
        assert_eq!(sizes(&after), [(0, 200), (2, 50)]);
        let mut more = members.clone();
        more.extend(names("n", 200));
        let refilled = assign(&recorded(&after), &more, 200);
        assert_eq!(sizes(&refilled), [(0, 200), (1, 50), (2, 200)]);
    }

    #[test]
    fn a_lowered_limit_keeps_everyone_where_they_are() {
        let first = recorded(&assign(&BTreeMap::new(), &names("t", 300), 200));
        let after = assign(&first, &names("t", 300), 100);
        assert_eq!(sizes(&after), [(0, 200), (1, 100)]);
        assert!(after.new.is_empty());
    }

    #[test]
    fn shard_zero_runs_even_without_tenants() {
        assert_eq!(sizes(&assign(&BTreeMap::new(), &[], 200)), [(0, 0)]);
        let gone = BTreeMap::from([("t0000".to_owned(), 0)]);
        assert_eq!(sizes(&assign(&gone, &[], 200)), [(0, 0)]);
    }

    #[test]
    fn the_same_input_gives_the_same_assignment() {
        let members = names("t", 333);
        assert_eq!(
            assign(&BTreeMap::new(), &members, 50),
            assign(&BTreeMap::new(), &members, 50)
        );
    }
}
