//! The transparency log: typed entries appended to a Merkle tree, with signed checkpoints.
//!
//! Owns the order of operations on the server's side of the log. Storage is the caller's (a
//! [`LogStore`]); the signing key is the log key (see [`LogKey`]), never the seal key.

use crate::Error;
use crate::entry::LogEntry;
use crate::keys::LogKey;
use crate::merkle::{Hash, LogStore, MerkleTree};
use crate::note::Checkpoint;

/// A checkpoint together with its signed note text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedCheckpoint {
    /// The parsed checkpoint.
    pub checkpoint: Checkpoint,
    /// The signed note, as served to auditors and put into archives.
    pub note: String,
}

/// An append-only log of [`LogEntry`] values.
pub struct TransparencyLog<S> {
    tree: MerkleTree<S>,
    key: LogKey,
}

impl<S: LogStore> TransparencyLog<S> {
    /// Opens the log over `store` (empty or holding earlier entries), signing with `key`.
    pub fn new(store: S, key: LogKey) -> Self {
        Self {
            tree: MerkleTree::new(store),
            key,
        }
    }

    /// The Merkle tree, for proofs at any size.
    pub fn tree(&self) -> &MerkleTree<S> {
        &self.tree
    }

    /// The log key.
    pub fn key(&self) -> &LogKey {
        &self.key
    }

    /// The number of entries.
    pub fn size(&self) -> Result<u64, Error> {
        self.tree.size()
    }

    /// Appends an entry; returns its index. The caller stores the entry bytes if it needs them.
    pub fn append(&mut self, entry: &LogEntry) -> Result<u64, Error> {
        let leaf = entry.leaf_hash()?;
        self.tree.append_leaf_hash(leaf)
    }

    /// Signs a checkpoint of the log at its current size.
    pub fn checkpoint(&self) -> Result<SignedCheckpoint, Error> {
        let size = self.size()?;
        self.checkpoint_at(size)
    }

    /// Signs a checkpoint of the log at `size` (at most the current size).
    pub fn checkpoint_at(&self, size: u64) -> Result<SignedCheckpoint, Error> {
        let checkpoint = Checkpoint {
            origin: self.key.name().to_string(),
            size,
            root: self.tree.root_at(size)?,
            extensions: Vec::new(),
        };
        let note = self.key.sign_note(&checkpoint.to_text())?;
        Ok(SignedCheckpoint { checkpoint, note })
    }

    /// The inclusion proof of entry `index` at tree size `size`.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, Error> {
        self.tree.inclusion_proof(index, size)
    }

    /// The consistency proof between sizes `old` and `new`.
    pub fn consistency_proof(&self, old: u64, new: u64) -> Result<Vec<Hash>, Error> {
        self.tree.consistency_proof(old, new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merkle::{MemoryStore, verify_consistency, verify_inclusion};
    use crate::note::open_checkpoint;

    #[test]
    fn a_log_signs_checkpoints_that_prove_inclusion_and_consistency() {
        let key = LogKey::generate("test.example/log").unwrap();
        let verifier = key.verifier();
        let mut log = TransparencyLog::new(MemoryStore::new(), key);
        let mut leaves = Vec::new();
        for i in 0..10u32 {
            let entry = LogEntry::Statement(format!("{{\"n\":{i}}}").into_bytes());
            leaves.push(entry.leaf_hash().unwrap());
            assert_eq!(log.append(&entry).unwrap(), u64::from(i));
        }
        let old = log.checkpoint_at(4).unwrap();
        let new = log.checkpoint().unwrap();
        let new_cp = open_checkpoint(new.note.as_bytes(), std::slice::from_ref(&verifier)).unwrap();
        let old_cp = open_checkpoint(old.note.as_bytes(), &[verifier]).unwrap();
        let proof = log.inclusion_proof(7, new_cp.size).unwrap();
        verify_inclusion(7, new_cp.size, &leaves[7], &proof, &new_cp.root).unwrap();
        let proof = log.consistency_proof(old_cp.size, new_cp.size).unwrap();
        verify_consistency(old_cp.size, new_cp.size, &proof, &old_cp.root, &new_cp.root).unwrap();
    }
}
