//! Plumbing for dfdx's [`TensorCollection`] on modules whose structure is only known at run
//! time (lists of blocks, optional shortcuts, runtime-shaped tensors).
//!
//! dfdx's `iter_tensors` is a static function: it sees the visitor, not the module. To learn a
//! module's structure (how many blocks, which optional parts exist, its hyper-parameters) before
//! listing its fields, [`peek`] visits a tensor-less probe field whose getter records what it
//! needs from the module. Every dfdx visitor that walks an existing module (optimisers,
//! `alloc_grads`, `num_trainable_params`, safetensors save/load, `to_device`, `reset_params`)
//! calls the getters; only `BuildModule` (building from nothing, which these modules do not
//! support) does not, and then [`peek`] returns `None`.

use dfdx::nn::{ModuleVisitor, TensorCollection};
use dfdx::prelude::*;
use std::cell::RefCell;

/// A module with no tensors, visited by [`peek`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Probe;

impl<E: Dtype, D: Device<E>> TensorCollection<E, D> for Probe {
    type To<E2: Dtype, D2: Device<E2>> = Probe;
    fn iter_tensors<V: ModuleVisitor<Self, E, D>>(
        visitor: &mut V,
    ) -> Result<Option<Probe>, V::Err> {
        visitor.visit_fields((), |()| Probe)
    }
}

static PROBE: Probe = Probe;

/// Reads `f(module)` from the module a visitor is walking (see the module docs); `None` when
/// the visitor does not look at modules.
pub fn peek<M, E, D, V, R>(visitor: &mut V, f: impl Fn(&M) -> R) -> Result<Option<R>, V::Err>
where
    M: TensorCollection<E, D>,
    E: Dtype,
    D: Device<E>,
    V: ModuleVisitor<M, E, D>,
{
    let out = RefCell::new(None);
    visitor.visit_module::<Probe, _, _>(
        "",
        |m| {
            *out.borrow_mut() = Some(f(m));
            &PROBE
        },
        |m| {
            *out.borrow_mut() = Some(f(m));
            // A leaked box of a zero-sized type allocates nothing.
            Box::leak(Box::new(Probe))
        },
    )?;
    Ok(out.into_inner())
}

/// A list of modules saved under the names `0`, `1`, ... (PyTorch's `nn.Sequential` /
/// `nn.ModuleList` of identical modules), with a length chosen at run time.
#[derive(Debug, Clone)]
pub struct List<M> {
    pub items: Vec<M>,
}

impl<M> List<M> {
    pub fn new(items: Vec<M>) -> Self {
        Self { items }
    }
    pub fn len(&self) -> usize {
        self.items.len()
    }
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

impl<E: Dtype, D: Device<E>, M: TensorCollection<E, D>> TensorCollection<E, D> for List<M> {
    type To<E2: Dtype, D2: Device<E2>> = List<M::To<E2, D2>>;
    fn iter_tensors<V: ModuleVisitor<Self, E, D>>(
        visitor: &mut V,
    ) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        let n = peek(visitor, |s: &Self| s.items.len())?.unwrap_or(0);
        let names: Vec<String> = (0..n).map(|i| i.to_string()).collect();
        visitor.visit_fields(
            names
                .iter()
                .enumerate()
                .map(|(i, name)| {
                    Self::module(
                        name,
                        move |s: &Self| &s.items[i],
                        move |s: &mut Self| &mut s.items[i],
                    )
                })
                .collect::<Vec<_>>(),
            |items| List { items },
        )
    }
}

pub use kd_ops::layers::{runtime_options, Reset};
