//! The SFU: rooms, participants, peer connections, forwarding, layer choice, recording. Knows nothing of cases or users.
