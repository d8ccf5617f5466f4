//! The membership view: which nodes are in the swarm and in what state, as failure detection
//! (foca's SWIM, driven from outside) reports it. Placement and repair read the live members
//! from here; a node that is only suspected keeps its chunks' placement, so a short network
//! hiccup does not start re-replicating data.

use std::collections::BTreeMap;

use crate::node::NodeId;

/// What the swarm believes about a member.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum State {
    Alive,
    /// Missed probes; still counted for placement until declared down.
    Suspect,
    /// Declared failed; its chunks are re-made elsewhere.
    Down,
    /// Left on purpose (drained).
    Left,
}

/// One report about a member. A higher incarnation always wins (a node refutes a suspicion
/// by raising its own); at the same incarnation the worse state wins, as in SWIM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Report {
    pub node: NodeId,
    pub incarnation: u64,
    pub state: State,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Membership {
    members: BTreeMap<NodeId, (u64, State)>,
}

impl Membership {
    /// Applies a report; returns whether the view changed.
    pub fn apply(&mut self, r: Report) -> bool {
        match self.members.get(&r.node) {
            Some(&(inc, state))
                if inc > r.incarnation || (inc == r.incarnation && state >= r.state) =>
            {
                false
            }
            _ => {
                self.members.insert(r.node, (r.incarnation, r.state));
                true
            }
        }
    }

    pub fn state(&self, node: &NodeId) -> Option<State> {
        self.members.get(node).map(|(_, s)| *s)
    }

    /// Members that hold data for placement: alive or merely suspected.
    pub fn placement_members(&self) -> Vec<NodeId> {
        self.members
            .iter()
            .filter(|(_, (_, s))| matches!(s, State::Alive | State::Suspect))
            .map(|(n, _)| *n)
            .collect()
    }

    /// Members by state, for status output and metrics.
    pub fn counts(&self) -> BTreeMap<State, usize> {
        let mut out = BTreeMap::new();
        for (_, s) in self.members.values() {
            *out.entry(*s).or_default() += 1;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn node(n: u8) -> NodeId {
        NodeId([n; 16])
    }

    #[test]
    fn a_suspect_refutes_by_raising_its_incarnation() {
        let mut m = Membership::default();
        m.apply(Report {
            node: node(1),
            incarnation: 0,
            state: State::Alive,
        });
        m.apply(Report {
            node: node(1),
            incarnation: 0,
            state: State::Suspect,
        });
        assert_eq!(m.state(&node(1)), Some(State::Suspect));
        assert_eq!(
            m.placement_members(),
            vec![node(1)],
            "suspects keep their chunks"
        );
        assert!(!m.apply(Report {
            node: node(1),
            incarnation: 0,
            state: State::Alive
        }));
        assert!(m.apply(Report {
            node: node(1),
            incarnation: 1,
            state: State::Alive
        }));
        assert_eq!(m.state(&node(1)), Some(State::Alive));
        m.apply(Report {
            node: node(1),
            incarnation: 1,
            state: State::Down,
        });
        assert!(m.placement_members().is_empty());
    }

    proptest! {
        /// Views that receive the same reports in any order agree.
        #[test]
        fn views_converge_in_any_order(
            reports in proptest::collection::vec((0u8..4, 0u64..4, 0u8..4), 0..40),
            seed in any::<u64>(),
        ) {
            let states = [State::Alive, State::Suspect, State::Down, State::Left];
            let reports: Vec<Report> = reports
                .into_iter()
                .map(|(n, i, s)| Report { node: node(n), incarnation: i, state: states[s as usize] })
                .collect();
            let mut shuffled = reports.clone();
            let mut x = seed | 1;
            for i in (1..shuffled.len()).rev() {
                x ^= x << 13; x ^= x >> 7; x ^= x << 17;
                shuffled.swap(i, (x % (i as u64 + 1)) as usize);
            }
            let (mut a, mut b) = (Membership::default(), Membership::default());
            for r in &reports { a.apply(*r); }
            for r in &shuffled { b.apply(*r); }
            prop_assert_eq!(a, b);
        }
    }
}
