//! The one place that names the datasets: where they come from, how they are checked, their
//! shapes and normalisation constants (`../shared/spec/DATASETS.md`).

use crate::error::DataError;
use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DatasetName {
    Cifar10,
    Cifar100,
    TinyImagenet,
    Cinic10,
    Svhn,
    FashionMnist,
}

/// How a downloaded file is verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checksum {
    /// md5 of the file as downloaded.
    Md5(&'static str),
    /// sha256 of the gzip-decompressed contents (Fashion-MNIST: Debian recompressed the files,
    /// so only the decompressed bytes are stable).
    Sha256Gunzipped(&'static str),
}

/// What to do with a verified file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unpack {
    TarGz,
    Zip,
    /// Kept as it is (`.mat`, `.gz` read directly by the readers).
    Keep,
}

/// One file published by the dataset's authors.
#[derive(Debug, Clone, Copy)]
pub struct RemoteFile {
    pub url: &'static str,
    pub checksum: Checksum,
    pub unpack: Unpack,
    /// Size in bytes where the publisher states it (for the progress bar and a sanity check).
    pub size: Option<u64>,
}

impl RemoteFile {
    /// The file name: the last path segment of the address.
    pub fn file_name(&self) -> &'static str {
        self.url.rsplit('/').next().unwrap_or(self.url)
    }
}

/// Static facts about a dataset.
#[derive(Debug, Clone)]
pub struct DatasetInfo {
    pub name: DatasetName,
    pub classes: usize,
    pub channels: usize,
    /// Native image side (square images).
    pub size: usize,
    pub train_len: usize,
    pub test_len: usize,
    pub mean: &'static [f32],
    pub std: &'static [f32],
    pub files: &'static [RemoteFile],
}

macro_rules! fmnist {
    ($file:literal, $sha:literal) => {
        RemoteFile {
            url: concat!(
                "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
                $file
            ),
            checksum: Checksum::Sha256Gunzipped($sha),
            unpack: Unpack::Keep,
            size: None,
        }
    };
}

static FMNIST_FILES: [RemoteFile; 4] = [
    fmnist!(
        "train-images-idx3-ubyte.gz",
        "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"
    ),
    fmnist!(
        "train-labels-idx1-ubyte.gz",
        "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"
    ),
    fmnist!(
        "t10k-images-idx3-ubyte.gz",
        "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"
    ),
    fmnist!(
        "t10k-labels-idx1-ubyte.gz",
        "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"
    ),
];

static CIFAR10_FILES: [RemoteFile; 1] = [RemoteFile {
    url: "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
    checksum: Checksum::Md5("c32a1d4ab5d03f1284b67883e8d87530"),
    unpack: Unpack::TarGz,
    size: Some(170_052_171),
}];

static CIFAR100_FILES: [RemoteFile; 1] = [RemoteFile {
    url: "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz",
    checksum: Checksum::Md5("03b5dce01913d631647c71ecec9e9cb8"),
    unpack: Unpack::TarGz,
    size: Some(168_513_733),
}];

static TINY_FILES: [RemoteFile; 1] = [RemoteFile {
    url: "http://cs231n.stanford.edu/tiny-imagenet-200.zip",
    checksum: Checksum::Md5("90528d7ca1a48142e341f4ef8d21d0de"),
    unpack: Unpack::Zip,
    size: Some(248_100_043),
}];

static CINIC_FILES: [RemoteFile; 1] = [RemoteFile {
    url: "https://datashare.ed.ac.uk/bitstream/handle/10283/3192/CINIC-10.tar.gz",
    checksum: Checksum::Md5("6ee4d0c996905fe93221de577967a372"),
    unpack: Unpack::TarGz,
    size: None,
}];

/// SVHN train and test; the 531,131-image `extra` split is opt-in (`svhn_extra_file`).
static SVHN_FILES: [RemoteFile; 2] = [
    RemoteFile {
        url: "http://ufldl.stanford.edu/housenumbers/train_32x32.mat",
        checksum: Checksum::Md5("e26dedcc434d2e4c54c9b2d4a06d8373"),
        unpack: Unpack::Keep,
        size: None,
    },
    RemoteFile {
        url: "http://ufldl.stanford.edu/housenumbers/test_32x32.mat",
        checksum: Checksum::Md5("eb5a983be6a315427106f1b164d9cef3"),
        unpack: Unpack::Keep,
        size: None,
    },
];

/// SVHN's `extra` split (1.3 GB), not fetched by default.
pub static SVHN_EXTRA_FILE: RemoteFile = RemoteFile {
    url: "http://ufldl.stanford.edu/housenumbers/extra_32x32.mat",
    checksum: Checksum::Md5("a93ce644f1a588dc4d68dda5feec44a7"),
    unpack: Unpack::Keep,
    size: None,
};

impl DatasetName {
    pub const ALL: [DatasetName; 6] = [
        DatasetName::Cifar10,
        DatasetName::Cifar100,
        DatasetName::TinyImagenet,
        DatasetName::Cinic10,
        DatasetName::Svhn,
        DatasetName::FashionMnist,
    ];

    /// The name used on the command line and as the folder under `datasets/`.
    pub fn as_str(self) -> &'static str {
        match self {
            DatasetName::Cifar10 => "cifar10",
            DatasetName::Cifar100 => "cifar100",
            DatasetName::TinyImagenet => "tiny-imagenet",
            DatasetName::Cinic10 => "cinic10",
            DatasetName::Svhn => "svhn",
            DatasetName::FashionMnist => "fashion-mnist",
        }
    }

    pub fn info(self) -> DatasetInfo {
        use DatasetName::*;
        let (classes, channels, size, train_len, test_len, files): (_, _, _, _, _, &'static [_]) =
            match self {
                Cifar10 => (10, 3, 32, 50_000, 10_000, &CIFAR10_FILES),
                Cifar100 => (100, 3, 32, 50_000, 10_000, &CIFAR100_FILES),
                TinyImagenet => (200, 3, 64, 100_000, 10_000, &TINY_FILES),
                Cinic10 => (10, 3, 32, 90_000, 90_000, &CINIC_FILES),
                Svhn => (10, 3, 32, 73_257, 26_032, &SVHN_FILES),
                FashionMnist => (10, 1, 28, 60_000, 10_000, &FMNIST_FILES),
            };
        let (mean, std): (&'static [f32], &'static [f32]) = match self {
            Cifar10 => (&[0.4914, 0.4822, 0.4465], &[0.2470, 0.2435, 0.2616]),
            Cifar100 => (&[0.5071, 0.4867, 0.4408], &[0.2675, 0.2565, 0.2761]),
            TinyImagenet => (&[0.485, 0.456, 0.406], &[0.229, 0.224, 0.225]),
            Cinic10 => (&[0.4789, 0.4723, 0.4305], &[0.2421, 0.2383, 0.2587]),
            Svhn => (&[0.4377, 0.4438, 0.4728], &[0.1980, 0.2010, 0.1970]),
            FashionMnist => (&[0.2860], &[0.3530]),
        };
        DatasetInfo {
            name: self,
            classes,
            channels,
            size,
            train_len,
            test_len,
            mean,
            std,
            files,
        }
    }

    /// Where Debian's `dataset-fashion-mnist` package puts the real files.
    pub fn debian_path(self) -> Option<&'static str> {
        (self == DatasetName::FashionMnist).then_some("/usr/share/datasets/fashion-mnist")
    }
}

impl fmt::Display for DatasetName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DatasetName {
    type Err = DataError;
    fn from_str(s: &str) -> Result<Self, DataError> {
        let norm = s.to_ascii_lowercase().replace('_', "-");
        let alias = match norm.as_str() {
            "cifar-10" => "cifar10",
            "cifar-100" => "cifar100",
            "tinyimagenet" | "tiny-imagenet-200" => "tiny-imagenet",
            "cinic-10" => "cinic10",
            "fashionmnist" | "fmnist" => "fashion-mnist",
            other => other,
        };
        DatasetName::ALL
            .into_iter()
            .find(|d| d.as_str() == alias)
            .ok_or_else(|| DataError::UnknownDataset(s.to_string()))
    }
}
