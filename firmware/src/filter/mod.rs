//! Filters: what decides where an inbound frame goes.
//!
//! A filter is either Rust code implementing [`Filter`], or a [`FilterTree`]
//! (US patent 6359886): if-nodes test one header field and have two outcomes,
//! case-nodes switch on one field with many outcomes, leaves name a
//! destination. The host-controlled tables are the tree's dynamic nodes:
//! `connections` (a case-node on the exact 5-tuple whose arms the hosts
//! install), `listeners` (a case-node on the destination address, port and
//! protocol whose arms are listener groups) and `fragments`; each has a `miss`
//! branch. Trees are built in Rust ([`NodeSpec`]) or loaded from YAML at run
//! time ([`FilterTree::from_yaml`]).
//!
//! The built-in filter is the tree [`FilterTree::builtin`]; the firmware runs
//! an equivalent hard-coded version unless a filter is installed.

mod tree;

pub use tree::{
    CaseArm, CaseSpec, DeliverSpec, Field, FilterTree, IfSpec, Literal, MAX_DEPTH, MAX_NODES,
    MaskSpec, MissSpec, NodeSpec, Test, TreeError, TreeFile,
};

pub use crate::firmware::Stages;
use crate::verdict::Verdict;
use crate::wire::ParsedFrame;

/// A filter: decides the verdict of a well-formed frame, possibly by handing
/// it to the built-in stages.
///
/// ```
/// use snet_firmware::filter::{Filter, Stages};
/// use snet_firmware::wire::ParsedFrame;
/// use snet_firmware::{ProcessorId, QueueId, Verdict};
///
/// /// Port 8080 from 198.18.5.0/24 to processor 3; everything else as usual.
/// struct Lab8080;
///
/// impl Filter for Lab8080 {
///     fn classify(&self, frame: &ParsedFrame, stages: &mut Stages<'_>) -> Verdict {
///         let from_lab = frame.ip.is_some_and(|ip| ip.src[..15] == [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 198, 18, 5]);
///         let to_8080 = frame.ip.and_then(|ip| ip.transport).is_some_and(|t| t.dst_port == 8080);
///         if from_lab && to_8080 {
///             return stages.deliver(ProcessorId(3), QueueId(0));
///         }
///         stages.host_controlled(frame)
///     }
/// }
/// ```
pub trait Filter {
    /// The verdict for `frame`. Call `stages` for the built-in behaviour.
    fn classify(&self, frame: &ParsedFrame, stages: &mut Stages<'_>) -> Verdict;

    /// A name for reports.
    fn name(&self) -> &str {
        "custom"
    }
}

impl Filter for FilterTree {
    fn classify(&self, frame: &ParsedFrame, stages: &mut Stages<'_>) -> Verdict {
        self.evaluate(frame, stages)
    }

    fn name(&self) -> &str {
        self.tree_name()
    }
}
