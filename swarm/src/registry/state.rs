//! What the registry decides: a pure state machine over the commands its log carries. Every
//! member applies the same committed commands in the same order, so every member holds the
//! same state and gives the same answer; the consensus layer only orders the commands.
//!
//! Two kinds of decision live here, the few the namespace's last-writer-wins merge cannot
//! make:
//! - **Bucket names**: a name maps to the one incarnation ([`BucketId`]) allowed to hold it.
//!   A claim is a compare-and-set: it succeeds on a free name, on the name's own incarnation
//!   (a retry), or when it names the incarnation it replaces, which the proposer has seen
//!   deleted (a deletion is final, so a dead incarnation can never need the name again).
//!   Deleting a bucket needs no decision.
//! - **Conditional writes** (`If-None-Match: *`, `If-Match`): per key, the newest state a
//!   conditional write left, stamped. A write is judged against whichever is newer, that
//!   state or the proposer's own view of the key (which covers unconditional writes, ordered
//!   by the namespace), so of racing conditional writers exactly one wins.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use store::Hlc;

/// A bucket incarnation's id (see `store::BucketId`), as bytes on the wire.
pub type Incarnation = [u8; 16];

/// A node's id (see `store::NodeId`), as bytes on the wire.
pub type Node = [u8; 16];

/// Who holds a bucket name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    pub id: Incarnation,
    pub owner: String,
    /// When the claim was made (proposer's wall clock, unix ms).
    pub claimed_ms: u64,
    /// The node that asked, and creates the incarnation once granted.
    pub node: Node,
}

/// What a key holds, as of a stamp.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyView {
    /// The newest write of the key this view reflects (`None`: nothing ever written).
    pub stamp: Option<Hlc>,
    /// The current object's ETag (`None`: no object, or a delete marker).
    pub etag: Option<String>,
}

/// What a conditional write requires of the key's current object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Expect {
    /// `If-None-Match: *`.
    Absent,
    /// `If-Match: <etag>` (unquoted).
    ETag(String),
}

/// The newest state a conditional write left, by whom, and what it replaced (so that a write
/// decided but never carried out can be taken back).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Won {
    pub view: KeyView,
    pub writer: Node,
    pub before: Option<KeyView>,
}

/// A decision its proposer will never carry out: its answer was lost (a timeout, a crash),
/// or the local commit after it failed. Taking it back is what keeps such a decision from
/// holding a name or a key forever; the command is ordered after the decision it names (or
/// that decision was never committed), so it only ever undoes what it means to.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Abandon {
    Claim {
        name: String,
        id: Incarnation,
    },
    Write {
        bucket: Incarnation,
        key: String,
        stamp: Hlc,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    ClaimBucket {
        name: String,
        claim: Claim,
        /// The incarnation this claim may replace: one the proposer has seen deleted.
        replaces: Option<Incarnation>,
    },
    Write {
        bucket: Incarnation,
        key: String,
        expect: Expect,
        /// The key as the proposer sees it.
        seen: KeyView,
        /// The write's stamp (taken after `seen` was read) and the ETag it leaves.
        stamp: Hlc,
        etag: String,
        writer: Node,
    },
    Abandon(Abandon),
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// An entry with no command (a new leader's blank entry, a membership change).
    #[default]
    Nothing,
    Claimed,
    /// The name is held by another incarnation.
    NameTaken(Claim),
    Written,
    /// The precondition does not hold against the key's newest known state.
    Failed {
        current: Option<String>,
    },
}

/// The registry's state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub buckets: BTreeMap<String, Claim>,
    /// (incarnation, key) -> the newest state a conditional write left.
    pub keys: BTreeMap<(Incarnation, String), Won>,
}

impl State {
    pub fn apply(&mut self, cmd: Command) -> Outcome {
        match cmd {
            Command::ClaimBucket {
                name,
                claim,
                replaces,
            } => match self.buckets.get(&name) {
                Some(held) if held.id != claim.id && Some(held.id) != replaces => {
                    Outcome::NameTaken(held.clone())
                }
                Some(held) if held.id == claim.id => Outcome::Claimed,
                _ => {
                    if let Some(old) = replaces {
                        self.keys.retain(|(b, _), _| *b != old);
                    }
                    self.buckets.insert(name, claim);
                    Outcome::Claimed
                }
            },
            Command::Write {
                bucket,
                key,
                expect,
                seen,
                stamp,
                etag,
                writer,
            } => {
                let slot = (bucket, key);
                let held = self.keys.get(&slot).map(|w| w.view.clone());
                let newest = match &held {
                    Some(k) if k.stamp > seen.stamp => k.etag.clone(),
                    _ => seen.etag,
                };
                let holds = match &expect {
                    Expect::Absent => newest.is_none(),
                    Expect::ETag(e) => newest.as_deref() == Some(e.as_str()),
                };
                if !holds {
                    return Outcome::Failed { current: newest };
                }
                self.keys.insert(
                    slot,
                    Won {
                        view: KeyView {
                            stamp: Some(stamp),
                            etag: Some(etag),
                        },
                        writer,
                        before: held,
                    },
                );
                Outcome::Written
            }
            Command::Abandon(Abandon::Claim { name, id }) => {
                if self.buckets.get(&name).is_some_and(|c| c.id == id) {
                    self.buckets.remove(&name);
                }
                Outcome::Nothing
            }
            Command::Abandon(Abandon::Write { bucket, key, stamp }) => {
                let slot = (bucket, key);
                if let Some(w) = self.keys.get_mut(&slot)
                    && w.view.stamp == Some(stamp)
                {
                    // Back to what the registry knew before that write, or to nothing.
                    match w.before.take() {
                        Some(view) => w.view = view,
                        None => {
                            self.keys.remove(&slot);
                        }
                    }
                }
                Outcome::Nothing
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use store::NodeId;

    fn at(ms: u64, node: u8) -> Hlc {
        Hlc {
            wall_ms: ms,
            logical: 0,
            node: NodeId([node; 16]),
        }
    }

    fn claim(id: u8, owner: &str) -> Claim {
        Claim {
            id: [id; 16],
            owner: owner.into(),
            claimed_ms: 0,
            node: [7; 16],
        }
    }

    fn create(name: &str, c: Claim, replaces: Option<u8>) -> Command {
        Command::ClaimBucket {
            name: name.into(),
            claim: c,
            replaces: replaces.map(|r| [r; 16]),
        }
    }

    #[test]
    fn a_name_is_claimed_once_and_passes_on_only_from_a_dead_incarnation() {
        let mut s = State::default();
        assert_eq!(
            s.apply(create("b", claim(1, "alice"), None)),
            Outcome::Claimed
        );
        assert_eq!(
            s.apply(create("b", claim(1, "alice"), None)),
            Outcome::Claimed,
            "a retry of the same claim"
        );
        assert_eq!(
            s.apply(create("b", claim(2, "bob"), None)),
            Outcome::NameTaken(claim(1, "alice"))
        );
        assert_eq!(
            s.apply(create("b", claim(2, "bob"), Some(9))),
            Outcome::NameTaken(claim(1, "alice")),
            "replacing an incarnation that does not hold the name"
        );
        assert_eq!(
            s.apply(create("b", claim(2, "bob"), Some(1))),
            Outcome::Claimed
        );
        assert_eq!(
            s.apply(create("b", claim(3, "carol"), Some(1))),
            Outcome::NameTaken(claim(2, "bob")),
            "two proposers that both saw 1 deleted: only the first replaces it"
        );
    }

    fn write(expect: Expect, seen: (Option<u64>, Option<&str>), stamp: u64, etag: &str) -> Command {
        Command::Write {
            bucket: [1; 16],
            key: "k".into(),
            expect,
            seen: KeyView {
                stamp: seen.0.map(|ms| at(ms, 9)),
                etag: seen.1.map(str::to_owned),
            },
            stamp: at(stamp, 1),
            etag: etag.into(),
            writer: [1; 16],
        }
    }

    #[test]
    fn of_racing_creates_exactly_one_wins() {
        let mut s = State::default();
        // Both saw the key absent; the first committed wins, the other fails.
        assert_eq!(
            s.apply(write(Expect::Absent, (None, None), 10, "a")),
            Outcome::Written
        );
        assert_eq!(
            s.apply(write(Expect::Absent, (None, None), 11, "b")),
            Outcome::Failed {
                current: Some("a".into())
            }
        );
        // A later writer that saw a newer state (say, the object deleted after) is judged
        // by what it saw.
        assert_eq!(
            s.apply(write(Expect::Absent, (Some(20), None), 21, "c")),
            Outcome::Written
        );
    }

    #[test]
    fn if_match_chains_follow_the_winner() {
        let mut s = State::default();
        assert_eq!(
            s.apply(write(
                Expect::ETag("x".into()),
                (Some(5), Some("x")),
                10,
                "a"
            )),
            Outcome::Written
        );
        assert_eq!(
            s.apply(write(
                Expect::ETag("x".into()),
                (Some(5), Some("x")),
                11,
                "b"
            )),
            Outcome::Failed {
                current: Some("a".into())
            },
            "a racing If-Match on the old ETag loses"
        );
        assert_eq!(
            s.apply(write(
                Expect::ETag("a".into()),
                (Some(5), Some("x")),
                12,
                "c"
            )),
            Outcome::Written,
            "If-Match on the winner's ETag holds even before its write reached the proposer"
        );
    }

    #[test]
    fn an_abandoned_decision_is_taken_back_and_only_that_one() {
        let mut s = State::default();
        s.apply(create("b", claim(1, "alice"), None));
        s.apply(Command::Abandon(Abandon::Claim {
            name: "b".into(),
            id: [9; 16],
        }));
        assert_eq!(
            s.apply(create("b", claim(2, "bob"), None)),
            Outcome::NameTaken(claim(1, "alice")),
            "abandoning another incarnation frees nothing"
        );
        s.apply(Command::Abandon(Abandon::Claim {
            name: "b".into(),
            id: [1; 16],
        }));
        assert_eq!(
            s.apply(create("b", claim(2, "bob"), None)),
            Outcome::Claimed
        );

        assert_eq!(
            s.apply(write(Expect::Absent, (None, None), 10, "a")),
            Outcome::Written
        );
        assert_eq!(
            s.apply(write(Expect::ETag("a".into()), (None, None), 11, "b")),
            Outcome::Written
        );
        // The second write was never carried out: the key is judged by the first again.
        s.apply(Command::Abandon(Abandon::Write {
            bucket: [1; 16],
            key: "k".into(),
            stamp: at(11, 1),
        }));
        assert_eq!(
            s.apply(write(Expect::ETag("a".into()), (None, None), 12, "c")),
            Outcome::Written
        );
        // Abandoning a write that is no longer the newest changes nothing.
        s.apply(Command::Abandon(Abandon::Write {
            bucket: [1; 16],
            key: "k".into(),
            stamp: at(10, 1),
        }));
        assert_eq!(
            s.apply(write(Expect::ETag("c".into()), (None, None), 13, "d")),
            Outcome::Written
        );
    }

    #[test]
    fn replacing_an_incarnation_forgets_its_keys() {
        let mut s = State::default();
        s.apply(create("b", claim(1, "alice"), None));
        s.apply(write(Expect::Absent, (None, None), 10, "a"));
        assert_eq!(s.keys.len(), 1);
        s.apply(create("b", claim(2, "bob"), Some(1)));
        assert!(s.keys.is_empty());
    }
}
