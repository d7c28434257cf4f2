//! The backward pass: a dependency-counted walk of the recorded graph.
//!
//! Every tensor reachable from the output (through inputs that require a
//! gradient) gets an inbox with one slot per edge from a consumer. A
//! consumer fills its slots when its rule has run (or when it turns out to
//! have no gradient to pass on). A tensor whose slots are all filled is
//! *ready*: a leaf is then added to the [`GradStore`] at once and announced
//! to the hook, an op node joins a queue of rules to run, newest op first
//! (the reverse of the forward pass, as PyTorch's engine).
//!
//! Gradients are bit for bit those of the plain reverse-topological walk
//! this replaced: that walk added a tensor's incoming gradients in the
//! order of its consumers' topological positions (highest first, then the
//! consumer's input order), and the inbox adds them in exactly that order,
//! whatever order the rules ran in. Slots that arrive in that order (the
//! usual case) are added at once; an early one waits for those before it.
//! Only the moment a leaf reaches the store moves earlier.

use super::{BackwardOptions, GradStore, Node};
use crate::error::{Error, Result};
use crate::tensor::{Tensor, TensorId};
use std::collections::{BinaryHeap, HashMap, HashSet};

/// A leaf whose gradient is final for the running backward pass, as given
/// to the hook of [`Tensor::backward_into_with_hook`].
#[derive(Clone, Copy)]
pub struct LeafReady<'a> {
    /// The leaf (e.g. a parameter).
    pub leaf: &'a Tensor,
    /// The store, holding the leaf's final gradient (plus whatever it held
    /// before this pass). It holds none for the leaf only when every
    /// consumer's rule returned no gradient for it.
    pub store: &'a GradStore,
    /// Op nodes of the graph handled so far (their rule run, or skipped
    /// for lack of an incoming gradient).
    pub ops_done: usize,
    /// Op nodes in the graph: `ops_done / ops_total` is how far the pass
    /// has come.
    pub ops_total: usize,
}

/// The hook type of [`Tensor::backward_into_with_hook`].
type Hook<'h> = dyn FnMut(LeafReady<'_>) -> Result<()> + 'h;

/// Runs backward from `root` with upstream gradient `grad` into `store`,
/// calling `hook` for each leaf as soon as its gradient is final.
pub(super) fn run(
    root: &Tensor,
    grad: &Tensor,
    store: &mut GradStore,
    opts: BackwardOptions,
    hook: &mut Hook<'_>,
) -> Result<()> {
    let _no_grad = super::NoGradGuard::new();
    let mut walk = Walk::new(root)?;
    let seed = {
        let _profile = crate::profile::backward_scope("seed");
        grad.to_dtype(root.dtype())?
    };
    let root_at = walk.order.len() - 1;
    walk.inboxes[root_at].sum = Some(seed);
    walk.ready(root_at, store, hook)?;
    while let Some((_, index)) = walk.queue.pop() {
        walk.run_node(index, store, opts, hook)?;
    }
    Ok(())
}

/// The gradients flowing into one tensor.
#[derive(Default)]
struct Inbox {
    /// One per edge from a consumer: `(consumer's topological position,
    /// input position in the consumer)`, in the order the gradients are
    /// added: highest position first, then input order.
    edges: Vec<(std::cmp::Reverse<usize>, usize)>,
    /// Per edge: `None` until the consumer has delivered, then the
    /// gradient it passed (`Some(None)`: it passed none).
    slots: Vec<Option<Option<Tensor>>>,
    /// Edges already added into `sum`.
    added: usize,
    /// The sum of the gradients added so far.
    sum: Option<Tensor>,
}

impl Inbox {
    /// Files the gradient of edge `(consumer, input)` and adds every edge
    /// that is next in order; true when the inbox is complete.
    fn deliver(&mut self, consumer: usize, input: usize, grad: Option<Tensor>) -> Result<bool> {
        let key = (std::cmp::Reverse(consumer), input);
        let at = self.edges.binary_search(&key).map_err(|_| {
            Error::Autograd("backward: a gradient for an edge the graph does not have".into())
        })?;
        self.slots[at] = Some(grad);
        while let Some(Some(slot)) = self.slots.get_mut(self.added) {
            if let Some(g) = slot.take() {
                self.sum = Some(match self.sum.take() {
                    Some(acc) => {
                        let _profile = crate::profile::backward_scope("accumulate");
                        acc.add(&g)?
                    }
                    None => g,
                });
            }
            self.slots[self.added] = None;
            self.added += 1;
        }
        Ok(self.added == self.edges.len())
    }
}

/// The state of one backward pass.
struct Walk {
    /// Tensors that require a gradient and are reachable from the root,
    /// inputs before outputs (the root last).
    order: Vec<Tensor>,
    /// Each tensor's position in `order`.
    index: HashMap<TensorId, usize>,
    /// Per position: the gradients flowing in.
    inboxes: Vec<Inbox>,
    /// Ready op nodes as `(id, position)`, newest (highest id) first.
    queue: BinaryHeap<(TensorId, usize)>,
    /// Op nodes in `order`, and those handled so far.
    ops_total: usize,
    ops_done: usize,
}

impl Walk {
    /// Sorts the graph of `root` and lays out every tensor's inbox.
    fn new(root: &Tensor) -> Result<Walk> {
        let order = topological_order(root)?;
        let index: HashMap<TensorId, usize> =
            order.iter().enumerate().map(|(i, t)| (t.id(), i)).collect();
        let mut inboxes: Vec<Inbox> = (0..order.len()).map(|_| Inbox::default()).collect();
        let mut ops_total = 0;
        for (consumer, t) in order.iter().enumerate() {
            if let Node::Op(recorded) = &*t.node() {
                ops_total += 1;
                for (j, input) in recorded.op.inputs().iter().enumerate() {
                    if input.requires_grad() {
                        let at = position(&index, input)?;
                        inboxes[at].edges.push((std::cmp::Reverse(consumer), j));
                    }
                }
            }
        }
        for inbox in &mut inboxes {
            inbox.edges.sort_unstable();
            inbox.slots = vec![None; inbox.edges.len()];
        }
        Ok(Walk {
            order,
            index,
            inboxes,
            queue: BinaryHeap::new(),
            ops_total,
            ops_done: 0,
        })
    }

    /// The tensor at `index` has received all its gradient: store a leaf's
    /// (and tell the hook), queue an op node.
    fn ready(&mut self, index: usize, store: &mut GradStore, hook: &mut Hook<'_>) -> Result<()> {
        let t = &self.order[index];
        let is_leaf = match &*t.node() {
            Node::Leaf => true,
            Node::Op(_) => false,
            Node::Freed(name) => return Err(freed_error(name)),
        };
        if !is_leaf {
            self.queue.push((t.id(), index));
            return Ok(());
        }
        if let Some(g) = self.inboxes[index].sum.take() {
            let _profile = crate::profile::backward_scope("accumulate");
            store.accumulate(t, g)?;
        }
        hook(LeafReady {
            leaf: t,
            store,
            ops_done: self.ops_done,
            ops_total: self.ops_total,
        })
    }

    /// Runs the rule of the op node at `index` (when a gradient reached
    /// it) and delivers its input gradients.
    fn run_node(
        &mut self,
        index: usize,
        store: &mut GradStore,
        opts: BackwardOptions,
        hook: &mut Hook<'_>,
    ) -> Result<()> {
        let t = self.order[index].clone();
        let (inputs, grads) = {
            let mut node = t.node();
            let Node::Op(recorded) = &*node else {
                return Err(Error::Autograd(
                    "backward: a queued node is no longer an op".into(),
                ));
            };
            let inputs = recorded.op.inputs();
            let grads = match self.inboxes[index].sum.take() {
                Some(g) => {
                    let grads = propagate(recorded, &inputs, &t, &g)?;
                    if !opts.retain_graph {
                        let name = recorded.op.name();
                        *node = Node::Freed(name);
                    }
                    grads
                }
                None => vec![None; inputs.len()],
            };
            (inputs, grads)
        };
        self.ops_done += 1;
        for (j, (input, grad)) in inputs.iter().zip(grads).enumerate() {
            if !input.requires_grad() {
                continue;
            }
            let at = position(&self.index, input)?;
            if self.inboxes[at].deliver(index, j, grad)? {
                self.ready(at, store, hook)?;
            }
        }
        Ok(())
    }
}

/// The position of `t` in the walk's order.
fn position(index: &HashMap<TensorId, usize>, t: &Tensor) -> Result<usize> {
    index.get(&t.id()).copied().ok_or_else(|| {
        Error::Autograd("backward: an op's inputs changed while the graph was walked".into())
    })
}

/// Runs `recorded`'s rule for output `t` with incoming gradient `g`: one
/// checked gradient (or none) per input.
fn propagate(
    recorded: &super::RecordedOp,
    inputs: &[Tensor],
    t: &Tensor,
    g: &Tensor,
) -> Result<Vec<Option<Tensor>>> {
    let op = &recorded.op;
    recorded.check_versions(inputs, t)?;
    let grads = {
        let _profile = crate::profile::backward_scope(op.name());
        op.backward(&t.detach(), g)?
    };
    if grads.len() != inputs.len() {
        return Err(Error::Autograd(format!(
            "{}: backward returned {} gradients for {} inputs",
            op.name(),
            grads.len(),
            inputs.len()
        )));
    }
    for (input, grad) in inputs.iter().zip(&grads) {
        match grad {
            Some(grad) if input.requires_grad() && grad.shape() != input.shape() => {
                return Err(Error::Autograd(format!(
                    "{}: gradient of shape {:?} for an input of shape {:?}",
                    op.name(),
                    grad.shape(),
                    input.shape()
                )));
            }
            _ => {}
        }
    }
    Ok(grads)
}

pub(super) fn freed_error(name: &str) -> Error {
    Error::Autograd(format!(
        "the graph through `{name}` was already freed by an earlier backward; \
         use BackwardOptions {{ retain_graph: true }} to run backward twice"
    ))
}

/// Tensors that require a gradient and are reachable from `root`, inputs
/// before outputs. Iterative DFS, so deep graphs cannot overflow the stack.
fn topological_order(root: &Tensor) -> Result<Vec<Tensor>> {
    let mut order = Vec::new();
    let mut visited = HashSet::new();
    // (tensor, children already pushed?)
    let mut stack = vec![(root.clone(), false)];
    while let Some((t, expanded)) = stack.pop() {
        if expanded {
            order.push(t);
            continue;
        }
        if !visited.insert(t.id()) {
            continue;
        }
        let inputs = match &*t.node() {
            Node::Op(recorded) => recorded.op.inputs(),
            Node::Leaf => Vec::new(),
            Node::Freed(name) => return Err(freed_error(name)),
        };
        stack.push((t, true));
        for input in inputs {
            if input.requires_grad() && !visited.contains(&input.id()) {
                stack.push((input, false));
            }
        }
    }
    Ok(order)
}

#[cfg(test)]
#[path = "walk_tests.rs"]
mod tests;
