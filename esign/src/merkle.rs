//! The RFC 6962 Merkle tree behind the transparency log: hashing, proofs, and proof checking.
//!
//! Owns the tree arithmetic (RFC 9162 §2.1). Storage is behind [`LogStore`], which keeps the leaf
//! hashes and the hash of every complete, aligned subtree ("perfect node"), written once when its
//! last leaf arrives. Any root, inclusion proof or consistency proof then costs O(log n) node reads,
//! however large the log. This module knows nothing of what the entries mean (see `entry`).

use sha2::{Digest, Sha256};

use crate::Error;

/// A SHA-256 hash.
pub type Hash = [u8; 32];

/// The root of the empty tree: SHA-256 of the empty string.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// The leaf hash of an entry: SHA-256(0x00 || entry).
pub fn leaf_hash(entry: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(entry);
    h.finalize().into()
}

/// The hash of an interior node: SHA-256(0x01 || left || right).
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// One stored node: the perfect subtree at `level` (0 = leaf) covering leaves
/// `[index << level, (index + 1) << level)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Node {
    /// Height of the subtree; 0 for a leaf.
    pub level: u8,
    /// Position of the subtree among those of its level.
    pub index: u64,
    /// Its hash.
    pub hash: Hash,
}

/// Where the log keeps its hashes. The server implements this on SQLite; [`MemoryStore`] is here.
pub trait LogStore {
    /// The number of leaves.
    fn size(&self) -> Result<u64, Error>;
    /// The stored hash of a perfect node, or `None` when it does not exist (yet).
    fn node(&self, level: u8, index: u64) -> Result<Option<Hash>, Error>;
    /// Appends one leaf: stores `nodes` (the leaf at level 0, then every subtree it completes) and
    /// grows the size by one, all or nothing.
    fn append(&mut self, nodes: &[Node]) -> Result<(), Error>;
    /// The leaf hash at `index` (a level-0 node).
    fn leaf(&self, index: u64) -> Result<Option<Hash>, Error> {
        self.node(0, index)
    }
}

/// An in-memory [`LogStore`], for tests and for building proofs in tools.
#[derive(Clone, Debug, Default)]
pub struct MemoryStore {
    levels: Vec<Vec<Hash>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl LogStore for MemoryStore {
    fn size(&self) -> Result<u64, Error> {
        Ok(self.levels.first().map_or(0, |l| l.len() as u64))
    }

    fn node(&self, level: u8, index: u64) -> Result<Option<Hash>, Error> {
        let found = self
            .levels
            .get(usize::from(level))
            .and_then(|l| l.get(usize::try_from(index).ok()?));
        Ok(found.copied())
    }

    fn append(&mut self, nodes: &[Node]) -> Result<(), Error> {
        // Check every node first, so a bad batch changes nothing.
        for node in nodes {
            let have = self.levels.get(usize::from(node.level)).map_or(0, Vec::len);
            if have as u64 != node.index {
                return Err(Error::Misuse(format!(
                    "node ({}, {}) appended out of order",
                    node.level, node.index
                )));
            }
        }
        for node in nodes {
            let level = usize::from(node.level);
            if self.levels.len() <= level {
                self.levels.resize_with(level + 1, Vec::new);
            }
            self.levels[level].push(node.hash);
        }
        Ok(())
    }
}

/// An append-only Merkle tree over a [`LogStore`].
#[derive(Debug)]
pub struct MerkleTree<S> {
    store: S,
}

impl<S: LogStore> MerkleTree<S> {
    /// Wraps a store (empty or holding an earlier tree).
    pub fn new(store: S) -> Self {
        Self { store }
    }

    /// The store, for reads the tree does not offer.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Gives the store back.
    pub fn into_store(self) -> S {
        self.store
    }

    /// The number of leaves.
    pub fn size(&self) -> Result<u64, Error> {
        self.store.size()
    }

    /// Appends a leaf hash; returns its index.
    pub fn append_leaf_hash(&mut self, leaf: Hash) -> Result<u64, Error> {
        let index = self.store.size()?;
        let mut nodes = vec![Node {
            level: 0,
            index,
            hash: leaf,
        }];
        let (mut level, mut at, mut hash) = (0u8, index, leaf);
        while at & 1 == 1 {
            let left = self.required_node(level, at - 1)?;
            hash = node_hash(&left, &hash);
            level += 1;
            at >>= 1;
            nodes.push(Node {
                level,
                index: at,
                hash,
            });
        }
        self.store.append(&nodes)?;
        Ok(index)
    }

    /// The root hash of the tree at `size` leaves (at most the current size).
    pub fn root_at(&self, size: u64) -> Result<Hash, Error> {
        self.check_size(size)?;
        if size == 0 {
            return Ok(empty_root());
        }
        self.subtree_root(0, size)
    }

    /// The inclusion proof of leaf `index` in the tree of `size` leaves (RFC 9162 §2.1.3.1).
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, Error> {
        self.check_size(size)?;
        if index >= size {
            return Err(Error::Misuse(format!(
                "leaf {index} is not in a tree of {size}"
            )));
        }
        let mut proof = Vec::new();
        self.path(index, 0, size, &mut proof)?;
        Ok(proof)
    }

    /// The consistency proof from the tree of `old` leaves to that of `new` (RFC 9162 §2.1.4.1).
    pub fn consistency_proof(&self, old: u64, new: u64) -> Result<Vec<Hash>, Error> {
        self.check_size(new)?;
        if old == 0 || old > new {
            return Err(Error::Misuse(format!(
                "no consistency proof from size {old} to {new}"
            )));
        }
        let mut proof = Vec::new();
        if old < new {
            self.subproof(old, 0, new, true, &mut proof)?;
        }
        Ok(proof)
    }

    fn check_size(&self, size: u64) -> Result<(), Error> {
        let have = self.store.size()?;
        if size > have {
            return Err(Error::Misuse(format!(
                "tree size {size} is beyond the log's {have}"
            )));
        }
        Ok(())
    }

    fn required_node(&self, level: u8, index: u64) -> Result<Hash, Error> {
        self.store
            .node(level, index)?
            .ok_or_else(|| Error::Store(format!("log store lacks node ({level}, {index})").into()))
    }

    /// MTH of leaves `[start, start + n)`, where `start` is a multiple of the largest power of two
    /// below `n` (always so in RFC 6962's recursion): the left part is one stored node, so only the
    /// right edge recurses, O(log n) reads.
    fn subtree_root(&self, start: u64, n: u64) -> Result<Hash, Error> {
        if n.is_power_of_two() && start.is_multiple_of(n) {
            let level = n.trailing_zeros() as u8;
            return self.required_node(level, start >> level);
        }
        let k = split(n);
        let left = self.subtree_root(start, k)?;
        let right = self.subtree_root(start + k, n - k)?;
        Ok(node_hash(&left, &right))
    }

    /// PATH(m, D[start : start + n]) appended to `out` from the leaf upward.
    fn path(&self, m: u64, start: u64, n: u64, out: &mut Vec<Hash>) -> Result<(), Error> {
        if n <= 1 {
            return Ok(());
        }
        let k = split(n);
        if m < k {
            self.path(m, start, k, out)?;
            out.push(self.subtree_root(start + k, n - k)?);
        } else {
            self.path(m - k, start + k, n - k, out)?;
            out.push(self.subtree_root(start, k)?);
        }
        Ok(())
    }

    /// SUBPROOF(m, D[start : start + n], b) appended to `out`.
    fn subproof(
        &self,
        m: u64,
        start: u64,
        n: u64,
        whole: bool,
        out: &mut Vec<Hash>,
    ) -> Result<(), Error> {
        if m == n {
            if !whole {
                out.push(self.subtree_root(start, n)?);
            }
            return Ok(());
        }
        let k = split(n);
        if m <= k {
            self.subproof(m, start, k, whole, out)?;
            out.push(self.subtree_root(start + k, n - k)?);
        } else {
            self.subproof(m - k, start + k, n - k, false, out)?;
            out.push(self.subtree_root(start, k)?);
        }
        Ok(())
    }
}

/// The largest power of two strictly below `n` (n ≥ 2).
fn split(n: u64) -> u64 {
    1 << (63 - (n - 1).leading_zeros())
}

/// Checks an inclusion proof (RFC 9162 §2.1.3.2).
///
/// `leaf` and `root` are taken as bytes as received; anything but 32 bytes is rejected.
pub fn verify_inclusion(
    index: u64,
    size: u64,
    leaf: &[u8],
    proof: &[Hash],
    root: &[u8],
) -> Result<(), Error> {
    let leaf: &Hash = leaf
        .try_into()
        .map_err(|_| Error::Verification(format!("leaf hash has {} bytes, want 32", leaf.len())))?;
    let computed = root_from_inclusion(index, size, leaf, proof)?;
    if computed.as_slice() != root {
        return Err(Error::Verification(
            "inclusion proof does not lead to the root".into(),
        ));
    }
    Ok(())
}

/// Recomputes the root that an inclusion proof leads to.
pub fn root_from_inclusion(
    index: u64,
    size: u64,
    leaf: &Hash,
    proof: &[Hash],
) -> Result<Hash, Error> {
    if index >= size {
        return Err(Error::Verification(format!(
            "leaf index {index} is not below tree size {size}"
        )));
    }
    let (mut f, mut s, mut r) = (index, size - 1, *leaf);
    for p in proof {
        if s == 0 {
            return Err(Error::Verification(
                "inclusion proof is longer than the tree is deep".into(),
            ));
        }
        if f & 1 == 1 || f == s {
            r = node_hash(p, &r);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    if s != 0 {
        return Err(Error::Verification(
            "inclusion proof is shorter than the tree is deep".into(),
        ));
    }
    Ok(r)
}

/// Checks a consistency proof between two tree heads (RFC 9162 §2.1.4.2).
///
/// A proof from the empty tree is refused: it proves nothing about any entry.
pub fn verify_consistency(
    size1: u64,
    size2: u64,
    proof: &[Hash],
    root1: &[u8],
    root2: &[u8],
) -> Result<(), Error> {
    let fail = |why: &str| Err(Error::Verification(format!("consistency proof: {why}")));
    if size1 == 0 {
        return fail("the old tree is empty; nothing to be consistent with");
    }
    if size1 > size2 {
        return fail("the old tree is larger than the new one");
    }
    if size1 == size2 {
        if !proof.is_empty() {
            return fail("equal sizes need an empty proof");
        }
        if root1 != root2 {
            return fail("equal sizes but different roots");
        }
        return Ok(());
    }
    let (Ok(root1), Ok(root2)) = (<&Hash>::try_from(root1), <&Hash>::try_from(root2)) else {
        return fail("a root is not 32 bytes");
    };
    if proof.is_empty() {
        return fail("empty proof between different sizes");
    }
    let mut nodes: Vec<&Hash> = Vec::with_capacity(proof.len() + 1);
    if size1.is_power_of_two() {
        nodes.push(root1);
    }
    nodes.extend(proof.iter());
    let (mut f, mut s) = (size1 - 1, size2 - 1);
    while f & 1 == 1 {
        f >>= 1;
        s >>= 1;
    }
    let (mut fr, mut sr) = (*nodes[0], *nodes[0]);
    for c in &nodes[1..] {
        if s == 0 {
            return fail("proof is too long");
        }
        if f & 1 == 1 || f == s {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        f >>= 1;
        s >>= 1;
    }
    if s != 0 {
        return fail("proof is too short");
    }
    if &fr != root1 {
        return fail("does not lead to the old root");
    }
    if &sr != root2 {
        return fail("does not lead to the new root");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6962's MTH computed the slow, obvious way, as the reference.
    fn reference_root(leaves: &[Hash]) -> Hash {
        match leaves.len() {
            0 => empty_root(),
            1 => leaves[0],
            n => {
                let k = split(n as u64) as usize;
                node_hash(&reference_root(&leaves[..k]), &reference_root(&leaves[k..]))
            }
        }
    }

    fn tree(n: u64) -> (MerkleTree<MemoryStore>, Vec<Hash>) {
        let mut t = MerkleTree::new(MemoryStore::new());
        let leaves: Vec<Hash> = (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        for l in &leaves {
            t.append_leaf_hash(*l).unwrap();
        }
        (t, leaves)
    }

    #[test]
    fn roots_match_the_reference_definition_at_every_size() {
        let (t, leaves) = tree(70);
        for size in 0..=70 {
            assert_eq!(
                t.root_at(size).unwrap(),
                reference_root(&leaves[..size as usize])
            );
        }
    }

    #[test]
    fn every_inclusion_proof_verifies_and_fails_for_a_neighbour() {
        let (t, leaves) = tree(33);
        for size in 1..=33 {
            let root = t.root_at(size).unwrap();
            for i in 0..size {
                let proof = t.inclusion_proof(i, size).unwrap();
                verify_inclusion(i, size, &leaves[i as usize], &proof, &root).unwrap();
                if size > 1 {
                    let other = (i + 1) % size;
                    assert!(
                        verify_inclusion(other, size, &leaves[i as usize], &proof, &root).is_err()
                    );
                }
            }
        }
    }

    #[test]
    fn every_consistency_proof_verifies_and_fails_against_a_wrong_root() {
        let (t, _) = tree(33);
        for new in 1..=33 {
            let root2 = t.root_at(new).unwrap();
            for old in 1..=new {
                let root1 = t.root_at(old).unwrap();
                let proof = t.consistency_proof(old, new).unwrap();
                verify_consistency(old, new, &proof, &root1, &root2).unwrap();
                if old < new {
                    assert!(verify_consistency(old, new, &proof, &root2, &root2).is_err());
                }
            }
        }
    }

    /// Counts node reads, to show proofs do not walk the whole log.
    struct CountingStore {
        inner: MemoryStore,
        reads: std::cell::Cell<u64>,
    }

    impl LogStore for CountingStore {
        fn size(&self) -> Result<u64, Error> {
            self.inner.size()
        }
        fn node(&self, level: u8, index: u64) -> Result<Option<Hash>, Error> {
            self.reads.set(self.reads.get() + 1);
            self.inner.node(level, index)
        }
        fn append(&mut self, nodes: &[Node]) -> Result<(), Error> {
            self.inner.append(nodes)
        }
    }

    #[test]
    fn an_inclusion_proof_in_a_large_log_reads_logarithmically_many_nodes() {
        let (t, _) = tree((1 << 16) + 12345);
        let store = CountingStore {
            inner: t.into_store(),
            reads: std::cell::Cell::new(0),
        };
        let t = MerkleTree::new(store);
        let size = t.size().unwrap();
        t.inclusion_proof(777, size).unwrap();
        let proof_reads = t.store().reads.replace(0);
        t.consistency_proof(1000, size).unwrap();
        let consistency_reads = t.store().reads.get();
        assert!(proof_reads <= 2 * 17, "{proof_reads} reads");
        assert!(consistency_reads <= 4 * 17, "{consistency_reads} reads");
    }
}
