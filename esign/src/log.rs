//! The transparency log: typed entries appended to a Merkle tree, with signed checkpoints.
//!
//! Owns the order of operations on the server's side of the log. Storage is the caller's (a
//! [`LogStore`]); the signing key is the log key (see [`LogKey`]), never the seal key.

use crate::Error;
use crate::archive::{KeyEvidence, LogEvidence, LogProof, RevocationEvidence};
use crate::entry::{KeyRegistration, KeyRevocation, LogEntry};
use crate::keys::LogKey;
use crate::merkle::{Hash, LogStore, MerkleTree, verify_consistency};
use crate::note::{Checkpoint, NoteVerifier, open_checkpoint};

/// What the server knows about one key: its registration and (if any) revocation, with indexes.
#[derive(Clone, Debug)]
pub struct KeyRecord {
    /// The registration entry.
    pub registration: KeyRegistration,
    /// Its log index.
    pub registered_at: u64,
    /// The revocation entry and its log index, if the key was revoked.
    pub revocation: Option<(KeyRevocation, u64)>,
}

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

    /// Everything an archive's `esign/proof` and `esign/keys` need, at a fresh checkpoint of the
    /// current size: the statement at `statement_index` and the signers' key records.
    ///
    /// A revocation that is not yet in the log at the checkpoint is left out (it cannot be proven).
    pub fn evidence(&self, statement_index: u64, keys: &[KeyRecord]) -> Result<LogEvidence, Error> {
        let checkpoint = self.checkpoint()?;
        let size = checkpoint.checkpoint.size;
        let proof = |index: u64| -> Result<LogProof, Error> {
            Ok(LogProof::new(index, &self.inclusion_proof(index, size)?))
        };
        let keys = keys
            .iter()
            .map(|k| {
                let revocation = match &k.revocation {
                    Some((entry, at)) if *at < size => Some(RevocationEvidence {
                        entry: entry.clone(),
                        revoked: proof(*at)?,
                    }),
                    _ => None,
                };
                Ok(KeyEvidence {
                    registration: k.registration.clone(),
                    registered: proof(k.registered_at)?,
                    revocation,
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        Ok(LogEvidence {
            statement: proof(statement_index)?,
            keys,
            checkpoint,
        })
    }
}

/// Checks that the log at checkpoint `new` extends the log at checkpoint `old` (both signed notes
/// from a trusted log key), given the consistency proof between them. Returns both checkpoints.
pub fn verify_checkpoint_consistency(
    old: &[u8],
    new: &[u8],
    proof: &[Hash],
    log_keys: &[NoteVerifier],
) -> Result<(Checkpoint, Checkpoint), Error> {
    let old = open_checkpoint(old, log_keys)?;
    let new = open_checkpoint(new, log_keys)?;
    if old.origin != new.origin {
        return Err(Error::Verification(format!(
            "checkpoints are of different logs: {:?} and {:?}",
            old.origin, new.origin
        )));
    }
    verify_consistency(old.size, new.size, proof, &old.root, &new.root)?;
    Ok((old, new))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merkle::{MemoryStore, verify_consistency, verify_inclusion};
    use crate::note::open_checkpoint;

    fn log_with(entries: &[&str]) -> TransparencyLog<MemoryStore> {
        let seed = ed25519_dalek::SigningKey::from_bytes(&[4; 32]);
        let key = LogKey::from_signing_key("test.example/log", seed).unwrap();
        let mut log = TransparencyLog::new(MemoryStore::new(), key);
        for e in entries {
            log.append(&LogEntry::Statement(e.as_bytes().to_vec()))
                .unwrap();
        }
        log
    }

    #[test]
    fn checkpoint_consistency_is_checked_from_the_two_signed_notes() {
        let entries = ["1", "2", "3", "4", "5", "6", "7", "8", "9"];
        let old = log_with(&entries[..5]).checkpoint().unwrap();
        let log = log_with(&entries);
        let new = log.checkpoint().unwrap();
        let keys = [log.key().verifier()];
        let proof = log.consistency_proof(5, 9).unwrap();
        verify_checkpoint_consistency(old.note.as_bytes(), new.note.as_bytes(), &proof, &keys)
            .unwrap();
        // A fork: the same first five entries, then others, signed by the same key.
        let forked = log_with(&["1", "2", "3", "4", "5", "6", "7", "8", "10"]);
        let fork = forked.checkpoint().unwrap();
        let result =
            verify_checkpoint_consistency(old.note.as_bytes(), fork.note.as_bytes(), &proof, &keys);
        assert!(result.is_err());
        let fork_proof = forked.consistency_proof(5, 9).unwrap();
        verify_checkpoint_consistency(
            old.note.as_bytes(),
            fork.note.as_bytes(),
            &fork_proof,
            &keys,
        )
        .unwrap();
        // ... which is why auditors compare checkpoints of the same size with each other.
        assert_ne!(fork.checkpoint.root, new.checkpoint.root);
    }

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
