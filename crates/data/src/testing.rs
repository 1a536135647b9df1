//! For tests that train on the real Fashion-MNIST: Debian's `dataset-fashion-mnist` (which CI
//! installs). Where it is absent such a test skips, saying why, instead of failing.

use crate::registry::DatasetName;
use std::path::PathBuf;

/// The folder of Debian's Fashion-MNIST when it is installed; otherwise prints why the calling
/// test is skipped and returns `None` (see [`crate::require_fashion_mnist`]).
pub fn fashion_mnist() -> Option<PathBuf> {
    let dir = PathBuf::from(DatasetName::FashionMnist.debian_path()?);
    if dir.join("train-images-idx3-ubyte.gz").is_file()
        && dir.join("t10k-labels-idx1-ubyte.gz").is_file()
    {
        return Some(dir);
    }
    eprintln!(
        "skipped: no Fashion-MNIST in {} (apt-get install dataset-fashion-mnist; CI installs it)",
        dir.display()
    );
    None
}

/// In a test: the folder of Debian's Fashion-MNIST, or return from the test (skipping it, with
/// the reason printed) when it is not installed. `let dir = kd_data::require_fashion_mnist!();`
#[macro_export]
macro_rules! require_fashion_mnist {
    () => {
        match $crate::testing::fashion_mnist() {
            Some(dir) => dir,
            None => return,
        }
    };
}
