//! CPU plumbing shared by the fast kernels: reading tensors into `Vec`s, taking and returning
//! gradient buffers without copies, a checked wrapper over `gemm`, and how to split a batch
//! over the rayon pool.

use crate::shared::{self, Published};
use crate::Shape4;
use dfdx::prelude::*;
use rayon::prelude::*;
use std::mem::MaybeUninit;
use std::sync::{Arc, Mutex};

/// Recently used read buffers, so the per-step copies of activations neither page-fault nor
/// zero-fill fresh memory. Bounded by [`POOL_BYTES`].
static POOL: Mutex<Vec<Vec<f32>>> = Mutex::new(Vec::new());
const POOL_BYTES: usize = 512 << 20;

/// A read-only copy of a tensor's contents whose buffer goes back to the pool when dropped.
pub(crate) struct Pooled(Vec<f32>);

impl std::ops::Deref for Pooled {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        &self.0
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        let v = std::mem::take(&mut self.0);
        if v.capacity() == 0 {
            return;
        }
        let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
        let held: usize = pool.iter().map(|b| b.capacity() * 4).sum();
        if held + v.capacity() * 4 <= POOL_BYTES {
            pool.push(v);
        }
    }
}

fn pooled_buffer(n: usize) -> Vec<f32> {
    let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
    let best = pool
        .iter()
        .enumerate()
        .filter(|(_, b)| b.capacity() >= n)
        .min_by_key(|(_, b)| b.capacity())
        .map(|(i, _)| i);
    let mut v = best.map(|i| pool.swap_remove(i)).unwrap_or_default();
    drop(pool);
    if v.len() >= n {
        v.truncate(n);
    } else {
        v.resize(n, 0.0);
    }
    v
}

/// Copies a CPU tensor's logical contents (row-major) into a pooled buffer.
pub(crate) fn read<S: Shape, T>(t: &Tensor<S, f32, Cpu, T>) -> Pooled {
    let t = t.retaped::<NoneTape>().contiguous();
    let mut v = pooled_buffer(t.shape().num_elements());
    t.copy_into(&mut v);
    Pooled(v)
}

/// The contents of an activation: the buffer itself when one of our ops made it and its tape
/// still holds it ([`crate::shared`]), else a pooled copy.
pub(crate) enum Input {
    Shared(Arc<Published>),
    Copied(Pooled),
}

impl std::ops::Deref for Input {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        match self {
            Input::Shared(p) => p,
            Input::Copied(c) => c,
        }
    }
}

/// An activation's contents, read in place where possible (see [`Input`]).
pub(crate) fn read4<T>(t: &Tensor<Shape4, f32, Cpu, T>) -> Input {
    match shared::lookup(t) {
        Some(p) => Input::Shared(p),
        None => Input::Copied(read(t)),
    }
}

/// Values per rayon task when a buffer is filled on the pool.
pub(crate) const FILL_CHUNK: usize = 1 << 15;

/// A `Vec` of `n` values, each written once by `fill(chunk index, chunk)` on the rayon pool
/// (chunks of `chunk` values, at least [`FILL_CHUNK`] values per task), without zeroing the
/// memory first.
///
/// # Safety
/// `fill` must write every element of every chunk it is given.
pub(crate) unsafe fn filled(
    n: usize,
    chunk: usize,
    fill: impl Fn(usize, &mut [MaybeUninit<f32>]) + Sync,
) -> Vec<f32> {
    let chunk = chunk.max(1);
    let mut v: Vec<f32> = Vec::with_capacity(n);
    v.spare_capacity_mut()[..n]
        .par_chunks_mut(chunk)
        .enumerate()
        .with_min_len(FILL_CHUNK.div_ceil(chunk))
        .for_each(|(i, c)| fill(i, c));
    // SAFETY: the first `n` elements were written above (the caller's contract).
    unsafe { v.set_len(n) };
    v
}

/// `f(a[i], b[i])` for every `i`, computed on the rayon pool into a new `Vec`.
pub(crate) fn zip_map(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32 + Sync) -> Vec<f32> {
    assert_eq!(a.len(), b.len(), "zip_map: lengths differ");
    // SAFETY: chunk `i` is `a[i·FILL_CHUNK..]` for its whole length (`a` and `b` are `n` long),
    // so the zip writes all of it.
    unsafe {
        filled(a.len(), FILL_CHUNK, |i, c| {
            let (a, b) = (&a[i * FILL_CHUNK..], &b[i * FILL_CHUNK..]);
            for ((d, &x), &y) in c.iter_mut().zip(a).zip(b) {
                d.write(f(x, y));
            }
        })
    }
}

/// `x` mapped chunk by chunk on the rayon pool into a new `Vec`: chunk `q` (`x[q·chunk..]`, a
/// channel plane, say) goes through `per_chunk(q)`.
pub(crate) fn map_chunks<G, H>(x: &[f32], chunk: usize, per_chunk: G) -> Vec<f32>
where
    G: Fn(usize) -> H + Sync,
    H: Fn(f32) -> f32,
{
    let chunk = chunk.max(1);
    // SAFETY: chunk `q` is `x[q·chunk..]` for its whole length (`x` is `n` long), so the zip
    // writes all of it.
    unsafe {
        filled(x.len(), chunk, |q, c| {
            let f = per_chunk(q);
            for (d, &v) in c.iter_mut().zip(&x[q * chunk..]) {
                d.write(f(v));
            }
        })
    }
}

/// `n` zeros, written on the rayon pool (an output buffer that a kernel then fills: glibc
/// cannot hand out fresh zero pages once `keep_large_allocations` keeps blocks on the heap).
pub(crate) fn zeros(n: usize) -> Vec<f32> {
    // SAFETY: `fill` writes the whole chunk.
    unsafe { filled(n, FILL_CHUNK, |_, c| c.fill(MaybeUninit::new(0.0))) }
}

/// Copies a CPU tensor's logical contents (row-major) into a new `Vec` (to become an output).
pub(crate) fn read_vec<S: Shape, T>(t: &Tensor<S, f32, Cpu, T>) -> Vec<f32> {
    let t = t.retaped::<NoneTape>().contiguous();
    let mut v = vec![0.0f32; t.shape().num_elements()];
    t.copy_into(&mut v);
    v
}

/// Moves the gradient buffer of `t` out of `grads` (allocating zeros first if it is absent).
/// Give it back with [`put_grad`] once the backward op is done with it, or, for the op's own
/// output, end it with [`release_grad`].
pub(crate) fn take_grad<S: Shape>(
    grads: &mut Gradients<f32, Cpu>,
    t: &Tensor<S, f32, Cpu>,
) -> Result<Vec<f32>, CpuError> {
    Ok(std::mem::take(&mut **grads.get_or_alloc_mut(t)?))
}

/// Ends an op's output gradient taken with [`take_grad`]: the op's backward pass is its last
/// reader (every consumer's ran before), so the buffer is freed now and the entry stays empty.
/// The next backward op's allocations then reuse the memory while it is cache-warm, and the
/// backward pass holds one activation gradient less at a time.
pub(crate) fn release_grad(v: Vec<f32>) {
    drop(v);
}

/// Returns a buffer taken with [`take_grad`].
pub(crate) fn put_grad<S: Shape>(
    grads: &mut Gradients<f32, Cpu>,
    t: &Tensor<S, f32, Cpu>,
    v: Vec<f32>,
) -> Result<(), CpuError> {
    **grads.get_or_alloc_mut(t)? = v;
    Ok(())
}

/// The gradient buffer of `t`, allocated (zeros) if absent, to accumulate into.
pub(crate) fn grad_mut<'a, S: Shape>(
    grads: &'a mut Gradients<f32, Cpu>,
    t: &Tensor<S, f32, Cpu>,
) -> Result<&'a mut [f32], CpuError> {
    Ok(grads.get_or_alloc_mut(t)?.as_mut_slice())
}

/// Adds `src` element-wise into the gradient of `t`.
pub(crate) fn add_grad<S: Shape>(
    grads: &mut Gradients<f32, Cpu>,
    t: &Tensor<S, f32, Cpu>,
    src: &[f32],
) -> Result<(), CpuError> {
    let g = grad_mut(grads, t)?;
    assert_eq!(g.len(), src.len(), "gradient buffer size mismatch");
    for (a, b) in g.iter_mut().zip(src) {
        *a += b;
    }
    Ok(())
}

/// A row-major matrix operand: `data[i * rs + j * cs]` is element `(i, j)`.
#[derive(Clone, Copy)]
pub(crate) struct Mat<'a> {
    pub data: &'a [f32],
    pub rs: usize,
    pub cs: usize,
}

fn check_extent(len: usize, rows: usize, cols: usize, rs: usize, cs: usize, what: &str) {
    if rows > 0 && cols > 0 {
        let last = (rows - 1) * rs + (cols - 1) * cs;
        assert!(
            last < len,
            "matmul: {what} of {rows}x{cols} (strides {rs}, {cs}) needs {} values, has {len}",
            last + 1
        );
    }
}

/// `dst (m×n, row stride dst_rs) = [dst +] lhs (m×k) · rhs (k×n)`, single-threaded `gemm`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    dst_rs: usize,
    accumulate: bool,
    lhs: Mat<'_>,
    rhs: Mat<'_>,
) {
    if m == 0 || n == 0 {
        return;
    }
    check_extent(dst.len(), m, n, dst_rs, 1, "dst");
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                dst[i * dst_rs..i * dst_rs + n].fill(0.0);
            }
        }
        return;
    }
    check_extent(lhs.data.len(), m, k, lhs.rs, lhs.cs, "lhs");
    check_extent(rhs.data.len(), k, n, rhs.rs, rhs.cs, "rhs");
    // SAFETY: every operand's extent was checked against its slice above, and `dst` is an
    // exclusive borrow that cannot alias the shared `lhs`/`rhs` borrows.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_rs as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.cs as isize,
            lhs.rs as isize,
            rhs.data.as_ptr(),
            rhs.cs as isize,
            rhs.rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// `dst` (`cols × rows`, row-major) = the transpose of `src` (`rows × cols`, row-major), in
/// tiles small enough that the strided side stays in L1.
pub(crate) fn transpose(src: &[f32], rows: usize, cols: usize, dst: &mut [f32]) {
    const TILE: usize = 32;
    assert!(src.len() >= rows * cols && dst.len() >= rows * cols);
    for c0 in (0..cols).step_by(TILE) {
        let c1 = (c0 + TILE).min(cols);
        for r0 in (0..rows).step_by(TILE) {
            let r1 = (r0 + TILE).min(rows);
            for r in r0..r1 {
                let s = &src[r * cols + c0..r * cols + c1];
                for (k, &v) in s.iter().enumerate() {
                    dst[(c0 + k) * rows + r] = v;
                }
            }
        }
    }
}

/// How many samples each rayon task gets when a batch of `n` is split into one contiguous run
/// per pool thread.
pub(crate) fn per_thread(n: usize) -> usize {
    n.div_ceil(rayon::current_num_threads().max(1)).max(1)
}

const SCRATCH_SLOTS: usize = 5;

thread_local! {
    /// Per-thread scratch buffers (rayon's workers live as long as the pool), so kernels do not
    /// allocate — and page-fault — their im2col matrices on every call.
    static SCRATCH: std::cell::RefCell<[Vec<f32>; SCRATCH_SLOTS]> = Default::default();
}

/// Takes this thread's scratch buffer `slot` with at least `len` elements (contents arbitrary).
/// Hand it back with [`give_scratch`].
pub(crate) fn scratch(slot: usize, len: usize) -> Vec<f32> {
    let mut v = SCRATCH.with(|s| std::mem::take(&mut s.borrow_mut()[slot]));
    if v.len() < len {
        v.resize(len, 0.0);
    }
    v
}

/// Returns a buffer taken with [`scratch`].
pub(crate) fn give_scratch(slot: usize, v: Vec<f32>) {
    SCRATCH.with(|s| s.borrow_mut()[slot] = v);
}

#[cfg(test)]
mod tests {
    #[test]
    fn transpose_matches_the_definition() {
        for &(rows, cols) in &[(1, 1), (3, 70), (16, 1024), (33, 65)] {
            let src: Vec<f32> = (0..rows * cols).map(|i| i as f32).collect();
            let mut dst = vec![f32::NAN; rows * cols];
            super::transpose(&src, rows, cols, &mut dst);
            for r in 0..rows {
                for c in 0..cols {
                    assert_eq!(
                        dst[c * rows + r],
                        src[r * cols + c],
                        "{rows}x{cols} at {r},{c}"
                    );
                }
            }
        }
    }
}
