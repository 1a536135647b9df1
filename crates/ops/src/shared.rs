//! Reading the activations our own ops produced without copying them.
//!
//! dfdx 0.13 has no borrowed view of a CPU tensor's storage: [`crate::util::read`] copies the
//! whole tensor, on one thread, every time an op reads its input (and again in its backward
//! pass). An op that makes an activation hands its `Vec` to dfdx with `tensor_from_vec`, which
//! keeps the heap buffer where it is; [`publish`] remembers that buffer's pointer, taken from
//! the `Vec` itself before the move, and [`read4`] gives the next op a slice of it.
//!
//! What makes the slice sound:
//! - A [`Published`] holds a clone of the tensor, so the buffer stays allocated, and the `Arc`
//!   around dfdx's storage is never unique while it lives, so dfdx never writes it in place
//!   (its in-place paths copy a shared buffer first). Readers hold the `Published` while they
//!   read.
//! - The registry holds only weak references, keyed by the buffer's address. The producing op's
//!   backward closure holds the strong one, so an activation is shared exactly as long as the
//!   tape that can read it again, and no longer than it would live anyway.
//! - A tensor is served from the registry only when its first element *is* the published
//!   buffer's first element and a unit step along each axis moves by the row-major stride
//!   (addresses compared through dfdx's `Index`, never dereferenced), so a permuted or
//!   broadcast view of the same buffer falls back to a copy.

use crate::Shape4;
use dfdx::prelude::*;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

/// An activation made by one of our ops whose buffer other ops may read in place.
pub(crate) struct Published {
    /// The first element, taken from the `Vec` (whose provenance covers the whole buffer).
    ptr: *const f32,
    len: usize,
    /// Keeps the buffer alive and its storage shared (see the module docs).
    _tensor: Tensor<Shape4, f32, Cpu>,
}

// SAFETY: `ptr` is only read through, as a shared slice, while `_tensor` keeps the buffer alive
// and unwritten; `Tensor<_, f32, Cpu>` itself is `Send + Sync`.
unsafe impl Send for Published {}
unsafe impl Sync for Published {}

impl std::ops::Deref for Published {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        // SAFETY: `ptr..ptr + len` is the buffer of `_tensor` (checked in `publish`), alive and
        // not written while `self` lives.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    map: None,
    inserts: 0,
});

struct Registry {
    map: Option<HashMap<usize, Weak<Published>>>,
    inserts: usize,
}

/// The address of `t`'s element `i`, compared, never dereferenced.
fn addr<T>(t: &Tensor<Shape4, f32, Cpu, T>, i: [usize; 4]) -> *const f32 {
    &t[i] as *const f32
}

/// Whether `t` reads exactly `len` floats from `ptr` on, in row-major order.
fn is_dense_at<T>(t: &Tensor<Shape4, f32, Cpu, T>, ptr: *const f32, len: usize) -> bool {
    let (n, c, h, w) = *t.shape();
    if len == 0 || n * c * h * w != len || addr(t, [0; 4]) != ptr {
        return false;
    }
    let step = |i: [usize; 4], by: usize| addr(t, i) == ptr.wrapping_add(by);
    (w < 2 || step([0, 0, 0, 1], 1))
        && (h < 2 || step([0, 0, 1, 0], w))
        && (c < 2 || step([0, 1, 0, 0], h * w))
        && (n < 2 || step([1, 0, 0, 0], c * h * w))
}

/// Makes the output tensor of an op from its values and, when `traced` (the op records a
/// backward pass, whose closure should keep the returned handle), publishes its buffer for
/// in-place reads for as long as that handle lives.
pub(crate) fn publish(
    dev: &Cpu,
    v: Vec<f32>,
    shape: Shape4,
    traced: bool,
) -> (Tensor<Shape4, f32, Cpu>, Option<Arc<Published>>) {
    let (ptr, len) = (v.as_ptr(), v.len());
    let t = dev.tensor_from_vec(v, shape);
    if !traced || !is_dense_at(&t, ptr, len) {
        return (t, None);
    }
    let p = Arc::new(Published {
        ptr,
        len,
        _tensor: t.clone(),
    });
    let mut reg = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
    reg.inserts += 1;
    let purge = reg.inserts.is_multiple_of(256);
    let map = reg.map.get_or_insert_with(HashMap::new);
    if purge {
        map.retain(|_, w| w.strong_count() > 0);
    }
    map.insert(ptr as usize, Arc::downgrade(&p));
    (t, Some(p))
}

/// The published buffer `t` reads, if it is one and still held.
pub(crate) fn lookup<T>(t: &Tensor<Shape4, f32, Cpu, T>) -> Option<Arc<Published>> {
    let (n, c, h, w) = *t.shape();
    if n * c * h * w == 0 {
        return None;
    }
    let first = addr(t, [0; 4]);
    let p = {
        let reg = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
        reg.map.as_ref()?.get(&(first as usize))?.upgrade()?
    };
    is_dense_at(t, p.ptr, p.len).then_some(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A published activation is read in place by the tensor itself and its clones, not by a
    /// permuted view of the same buffer or a copy, and not once its handle is dropped.
    #[test]
    fn published_buffers_are_found_only_where_they_are_read_as_is() {
        let dev = Cpu::default();
        let v: Vec<f32> = (0..2 * 3 * 4 * 5).map(|i| i as f32).collect();
        assert!(publish(&dev, v.clone(), (2, 3, 4, 5), false).1.is_none());
        let (t, keep) = publish(&dev, v.clone(), (2, 3, 4, 5), true);
        let keep = keep.expect("dfdx keeps the Vec's buffer");
        let hit = lookup(&t).expect("the tensor itself");
        assert_eq!(&hit[..], &v[..]);
        assert!(lookup(&t.clone().retaped::<OwnedTape<f32, Cpu>>()).is_some());
        let permuted = t.clone().permute::<_, dfdx::shapes::Axes4<0, 1, 3, 2>>();
        assert!(lookup(&permuted).is_none(), "a transposed view");
        let copy = dev.tensor_from_vec(t.as_vec(), (2, 3, 4, 5));
        assert!(lookup(&copy).is_none(), "another buffer");
        drop((hit, keep));
        assert!(lookup(&t).is_none(), "released");
    }
}
