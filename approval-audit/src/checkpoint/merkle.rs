//! RFC 6962 Merkle trees (RFC 9162, section 2.1) over a log's record
//! lines: hashes, the incremental tree a writer keeps, and inclusion and
//! consistency proofs.

use ring::digest::{Context, SHA256};

/// A SHA-256 hash.
pub type Hash = [u8; 32];

/// The hash of a leaf: SHA-256(`0x00` || `data`).
///
/// ```
/// use approval_audit::checkpoint::leaf_hash;
///
/// // RFC 6962's empty leaf, as Certificate Transparency's tests know it.
/// assert_eq!(
///     leaf_hash(b"")[..4],
///     [0x6e, 0x34, 0x0b, 0x9c]
/// );
/// ```
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut context = Context::new(&SHA256);
    context.update(&[0x00]);
    context.update(data);
    finish(context)
}

/// The hash of an interior node: SHA-256(`0x01` || `left` || `right`).
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut context = Context::new(&SHA256);
    context.update(&[0x01]);
    context.update(left);
    context.update(right);
    finish(context)
}

/// The root of the empty tree: SHA-256 of no bytes.
pub fn empty_root() -> Hash {
    finish(Context::new(&SHA256))
}

fn finish(context: Context) -> Hash {
    let mut out = [0u8; 32];
    out.copy_from_slice(context.finish().as_ref());
    out
}

/// The tree a writer keeps while appending: the roots of the perfect
/// subtrees that make up its leaves (one per set bit of the size, largest
/// first). Appending costs one leaf hash and, on average, one node hash;
/// memory is O(log n).
///
/// ```
/// use approval_audit::checkpoint::{MerkleFrontier, leaf_hash, node_hash};
///
/// let mut tree = MerkleFrontier::new();
/// tree.push(leaf_hash(b"a"));
/// tree.push(leaf_hash(b"b"));
/// assert_eq!(tree.size(), 2);
/// assert_eq!(tree.root(), node_hash(&leaf_hash(b"a"), &leaf_hash(b"b")));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MerkleFrontier {
    size: u64,
    peaks: Vec<Hash>,
}

impl MerkleFrontier {
    /// The empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a leaf, given its [`leaf_hash`].
    pub fn push(&mut self, leaf: Hash) {
        let mut hash = leaf;
        let mut size = self.size;
        // Each trailing one bit of the old size is a perfect subtree of the
        // new leaf's size that now merges with it.
        while size & 1 == 1 {
            if let Some(left) = self.peaks.pop() {
                hash = node_hash(&left, &hash);
            }
            size >>= 1;
        }
        self.peaks.push(hash);
        self.size += 1;
    }

    /// Appends each line of `lines` (records, each ending in `\n`, as a
    /// sink has just written them) as a leaf.
    pub fn push_lines(&mut self, lines: &[u8]) {
        for line in lines.split_inclusive(|&b| b == b'\n') {
            self.push(leaf_hash(line.strip_suffix(b"\n").unwrap_or(line)));
        }
    }

    /// How many leaves the tree has.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The tree's root hash (RFC 6962 MTH).
    pub fn root(&self) -> Hash {
        let mut peaks = self.peaks.iter().rev();
        let Some(mut root) = peaks.next().copied() else {
            return empty_root();
        };
        for left in peaks {
            root = node_hash(left, &root);
        }
        root
    }
}

/// The root of the tree over `leaves` (leaf hashes).
pub fn root(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => empty_root(),
        1 => leaves[0],
        n => {
            let k = split(n);
            node_hash(&root(&leaves[..k]), &root(&leaves[k..]))
        }
    }
}

/// The largest power of two below `n` (n > 1): where RFC 6962 splits.
fn split(n: usize) -> usize {
    debug_assert!(n > 1);
    1 << (usize::BITS - 1 - (n - 1).leading_zeros())
}

/// The inclusion proof of leaf `index` in the tree over `leaves` (RFC 6962
/// PATH): the sibling hashes from the leaf up. `None` if `index` is out of
/// range.
pub fn inclusion_proof(leaves: &[Hash], index: usize) -> Option<Vec<Hash>> {
    if index >= leaves.len() {
        return None;
    }
    let mut proof = Vec::new();
    path(leaves, index, &mut proof);
    Some(proof)
}

fn path(leaves: &[Hash], index: usize, proof: &mut Vec<Hash>) {
    if leaves.len() <= 1 {
        return;
    }
    let k = split(leaves.len());
    if index < k {
        path(&leaves[..k], index, proof);
        proof.push(root(&leaves[k..]));
    } else {
        path(&leaves[k..], index - k, proof);
        proof.push(root(&leaves[..k]));
    }
}

/// Checks that `leaf` (a leaf hash) is at `index` in the tree of `size`
/// leaves whose root is `root` (RFC 9162, section 2.1.3.2).
pub fn verify_inclusion(leaf: &Hash, index: u64, size: u64, proof: &[Hash], root: &Hash) -> bool {
    if index >= size {
        return false;
    }
    let (mut fn_, mut sn) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if sn == 0 {
            return false;
        }
        if fn_ & 1 == 1 || fn_ == sn {
            r = node_hash(p, &r);
            if fn_ & 1 == 0 {
                while fn_ & 1 == 0 && fn_ != 0 {
                    fn_ >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    sn == 0 && r == *root
}

/// The consistency proof between the tree of the first `old` leaves and
/// the tree over all `leaves` (RFC 6962 PROOF). `None` unless
/// `0 < old <= leaves.len()`.
pub fn consistency_proof(leaves: &[Hash], old: usize) -> Option<Vec<Hash>> {
    if old == 0 || old > leaves.len() {
        return None;
    }
    let mut proof = Vec::new();
    subproof(old, leaves, true, &mut proof);
    Some(proof)
}

fn subproof(m: usize, leaves: &[Hash], complete: bool, proof: &mut Vec<Hash>) {
    let n = leaves.len();
    if m == n {
        if !complete {
            proof.push(root(leaves));
        }
        return;
    }
    let k = split(n);
    if m <= k {
        subproof(m, &leaves[..k], complete, proof);
        proof.push(root(&leaves[k..]));
    } else {
        subproof(m - k, &leaves[k..], false, proof);
        proof.push(root(&leaves[..k]));
    }
}

/// Checks that the tree of `old` leaves with root `old_root` is a prefix of
/// the tree of `new` leaves with root `new_root` (RFC 9162, section
/// 2.1.4.2). An empty old tree is refused: it proves nothing.
pub fn verify_consistency(
    old: u64,
    new: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> bool {
    if old == 0 || old > new {
        return false;
    }
    if old == new {
        return proof.is_empty() && old_root == new_root;
    }
    let mut proof = proof.iter();
    // When `old` is a power of two, the old root is the proof's first node.
    let first = if old.is_power_of_two() {
        *old_root
    } else {
        match proof.next() {
            Some(first) => *first,
            None => return false,
        }
    };
    let (mut fn_, mut sn) = (old - 1, new - 1);
    while fn_ & 1 == 1 {
        fn_ >>= 1;
        sn >>= 1;
    }
    let (mut fr, mut sr) = (first, first);
    for c in proof {
        if sn == 0 {
            return false;
        }
        if fn_ & 1 == 1 || fn_ == sn {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if fn_ & 1 == 0 {
                while fn_ & 1 == 0 && fn_ != 0 {
                    fn_ >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    sn == 0 && fr == *old_root && sr == *new_root
}
