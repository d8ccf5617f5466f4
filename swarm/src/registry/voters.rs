//! Who votes in the registry: a pure policy the leader applies every second, and the rule
//! by which a swarm's registry is founded.
//!
//! - Up to [`MAX_VOTERS`] storage members vote, an odd number (four voters tolerate no more
//!   failures than three, and need one more answer per decision). Every other member is a
//!   learner: it follows the log, so it knows the leader to forward proposals to.
//! - Voters change as little as possible: a voter that was seen alive within the grace
//!   period keeps its seat (a restart or a short partition moves nothing); one gone longer is
//!   replaced by the live member with the lowest id.
//! - Founding: a node started with no peer to join founds a registry of itself (the laptop,
//!   the first node of a swarm). With `--bootstrap-expect N` (every node given the same
//!   peers, as in a Kubernetes DaemonSet), the member with the lowest id among the first N
//!   live storage members founds it with all N as voters, once none of them belongs to one.

use std::collections::BTreeSet;
use std::time::Duration;

use super::RaftId;

/// At most this many voters.
pub const MAX_VOTERS: usize = 5;

/// A voter unseen for less than this keeps its seat.
pub const GRACE: Duration = Duration::from_secs(30);

/// The voters the registry should have, given the current ones and the members that may
/// hold a seat (alive, or voters seen alive within the grace period).
pub fn desired(current: &BTreeSet<RaftId>, usable: &BTreeSet<RaftId>) -> BTreeSet<RaftId> {
    let n = usable.len().min(MAX_VOTERS);
    let target = if n.is_multiple_of(2) {
        n.saturating_sub(1)
    } else {
        n
    }
    .max(1);
    let mut out: BTreeSet<RaftId> = current.intersection(usable).copied().take(target).collect();
    for id in usable {
        if out.len() >= target {
            break;
        }
        out.insert(*id);
    }
    if out.is_empty() { current.clone() } else { out }
}

/// The members a `--bootstrap-expect n` founding names, if `me` is the one to found it:
/// the `n` lowest ids among the live storage members, when `me` is the lowest.
pub fn founders(me: RaftId, live: &BTreeSet<RaftId>, n: usize) -> Option<BTreeSet<RaftId>> {
    if n == 0 || live.len() < n {
        return None;
    }
    let set: BTreeSet<RaftId> = live.iter().copied().take(n).collect();
    (set.first() == Some(&me)).then_some(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ids: &[u64]) -> BTreeSet<u64> {
        ids.iter().copied().collect()
    }

    #[test]
    fn voters_grow_to_an_odd_number_and_keep_their_seats() {
        assert_eq!(desired(&set(&[1]), &set(&[1, 2])), set(&[1]));
        assert_eq!(desired(&set(&[1]), &set(&[1, 2, 3])), set(&[1, 2, 3]));
        assert_eq!(desired(&set(&[1]), &set(&[1, 2, 3, 4])), set(&[1, 2, 3]));
        assert_eq!(
            desired(&set(&[4, 5, 6]), &set(&[1, 2, 3, 4, 5, 6])),
            set(&[1, 4, 5, 6, 2]),
            "existing voters first, then the lowest others"
        );
        assert_eq!(
            desired(&set(&[1, 2, 3]), &set(&(1..=9).collect::<Vec<_>>())).len(),
            5
        );
    }

    #[test]
    fn a_voter_gone_past_the_grace_is_replaced_and_an_empty_view_changes_nothing() {
        assert_eq!(desired(&set(&[1, 2, 3]), &set(&[1, 2, 4])), set(&[1, 2, 4]));
        assert_eq!(desired(&set(&[1, 2, 3]), &set(&[])), set(&[1, 2, 3]));
        assert_eq!(desired(&set(&[1, 2, 3]), &set(&[1, 2])), set(&[1]));
    }

    #[test]
    fn only_the_lowest_of_the_first_n_founds() {
        assert_eq!(founders(1, &set(&[1, 2]), 3), None);
        assert_eq!(founders(1, &set(&[1, 2, 3, 4]), 3), Some(set(&[1, 2, 3])));
        assert_eq!(founders(2, &set(&[1, 2, 3]), 3), None);
    }
}
