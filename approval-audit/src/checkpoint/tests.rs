//! Checkpoints against published vectors and a second implementation.
//!
//! Origin of the vectors:
//! - RFC 6962 known answers (leaves, roots for sizes 0–8, inclusion and
//!   consistency proofs): Google's certificate-transparency,
//!   `cpp/merkletree/merkle_tree_test.cc` (commit 0e901cac), the same set
//!   as transparency-dev/merkle `proof/verify_test.go` (Apache-2.0). Leaf
//!   numbers there are 1-based; indexes here are 0-based.
//! - Signed notes: Go's `golang.org/x/mod/sumdb/note` `note_test.go` and the
//!   package doc (BSD-3-Clause): the PeterNeumann keys, text and signatures.
//! - C2SP `signed-note.md` and `tlog-checkpoint.md` examples (no keys are
//!   published for them: parsed, not verified).

#![allow(
    clippy::cast_possible_truncation,
    reason = "the vectors' sizes and indexes are tiny"
)]

use proptest::prelude::*;

use super::*;

fn hex(text: &str) -> Hash {
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).unwrap();
    }
    out
}

fn bytes(text: &str) -> Vec<u8> {
    (0..text.len() / 2)
        .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

const LEAVES: [&str; 8] = [
    "",
    "00",
    "10",
    "2021",
    "3031",
    "40414243",
    "5051525354555657",
    "606162636465666768696a6b6c6d6e6f",
];

const ROOTS: [&str; 9] = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
];

/// (index, size, path).
const INCLUSION: [(u64, u64, &[&str]); 5] = [
    (0, 1, &[]),
    (
        0,
        8,
        &[
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        &[
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        3,
        &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
    ),
    (
        1,
        5,
        &[
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
];

/// (old size, new size, proof).
const CONSISTENCY: [(u64, u64, &[&str]); 5] = [
    (1, 1, &[]),
    (
        1,
        8,
        &[
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        &[
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        &[
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (
        6,
        7,
        &[
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
];

fn leaf_hashes() -> Vec<Hash> {
    LEAVES.iter().map(|l| leaf_hash(&bytes(l))).collect()
}

fn path(hashes: &[&str]) -> Vec<Hash> {
    hashes.iter().map(|h| hex(h)).collect()
}

#[test]
fn roots_match_the_rfc_6962_known_answers_for_every_size() {
    let leaves = leaf_hashes();
    let mut frontier = MerkleFrontier::new();
    assert_eq!(frontier.root(), hex(ROOTS[0]));
    for (n, expected) in ROOTS.iter().enumerate().skip(1) {
        frontier.push(leaves[n - 1]);
        assert_eq!(frontier.size(), n as u64);
        assert_eq!(frontier.root(), hex(expected), "size {n}");
        assert_eq!(root(&leaves[..n]), hex(expected), "size {n}");
    }
    assert_eq!(root(&[]), empty_root());
    // Hasher answers from transparency-dev/merkle rfc6962_test.go.
    assert_eq!(
        leaf_hash(b"L123456"),
        hex("395aa064aa4c29f7010acfe3f25db9485bbd4b91897b6ad7ad547639252b4d56")
    );
}

#[test]
fn inclusion_proofs_match_the_known_answers_and_verify() {
    let leaves = leaf_hashes();
    for (index, size, expected) in INCLUSION {
        let (i, n) = (index as usize, size as usize);
        let proof = inclusion_proof(&leaves[..n], i).unwrap();
        assert_eq!(proof, path(expected), "leaf {index} of {size}");
        let root = hex(ROOTS[n]);
        assert!(verify_inclusion(&leaves[i], index, size, &proof, &root));
    }
    assert_eq!(inclusion_proof(&leaves[..3], 3), None);
}

#[test]
fn consistency_proofs_match_the_known_answers_and_verify() {
    let leaves = leaf_hashes();
    for (old, new, expected) in CONSISTENCY {
        let proof = consistency_proof(&leaves[..new as usize], old as usize).unwrap();
        assert_eq!(proof, path(expected), "{old} -> {new}");
        let (old_root, new_root) = (hex(ROOTS[old as usize]), hex(ROOTS[new as usize]));
        assert!(verify_consistency(old, new, &old_root, &new_root, &proof));
    }
}

#[test]
fn altered_inclusion_proofs_are_refused() {
    // The mutations the reference suites apply to every good vector.
    let leaves = leaf_hashes();
    let some_hash = hex("abacaba000000000000000000000000000000000000000000060061e00123456");
    for (index, size, expected) in INCLUSION {
        let leaf = leaves[index as usize];
        let root = hex(ROOTS[size as usize]);
        let proof = path(expected);
        let refused = |leaf: &Hash, index: u64, size: u64, proof: &[Hash], root: &Hash| {
            assert!(
                !verify_inclusion(leaf, index, size, proof, root),
                "accepted: leaf {index} of {size}, {} hashes",
                proof.len()
            );
        };
        refused(&leaf, index.wrapping_sub(1), size, &proof, &root);
        refused(&leaf, index + 1, size, &proof, &root);
        refused(&leaf, index ^ 2, size, &proof, &root);
        refused(&leaf, index, size * 2, &proof, &root);
        refused(&leaf, index, size / 2, &proof, &root);
        refused(&leaf_hash(b"WrongLeaf"), index, size, &proof, &root);
        refused(&leaf, index, size, &proof, &empty_root());
        refused(&leaf, index, size, &proof, &some_hash);
        let mut longer = proof.clone();
        longer.push(root);
        refused(&leaf, index, size, &longer, &root);
        let mut prefixed = vec![root];
        prefixed.extend_from_slice(&proof);
        refused(&leaf, index, size, &prefixed, &root);
        for i in 0..proof.len() {
            let mut flipped = proof.clone();
            flipped[i][0] ^= 8;
            refused(&leaf, index, size, &flipped, &root);
        }
        if !proof.is_empty() {
            refused(&leaf, index, size, &proof[..proof.len() - 1], &root);
            let mut extra = proof.clone();
            extra.insert(1, some_hash);
            refused(&leaf, index, size, &extra, &root);
        }
    }
}

#[test]
fn altered_consistency_proofs_are_refused() {
    for (old, new, expected) in CONSISTENCY {
        let proof = path(expected);
        let (r1, r2) = (hex(ROOTS[old as usize]), hex(ROOTS[new as usize]));
        let refused = |old: u64, new: u64, r1: &Hash, r2: &Hash, proof: &[Hash]| {
            assert!(
                !verify_consistency(old, new, r1, r2, proof),
                "accepted: {old} -> {new}, {} hashes",
                proof.len()
            );
        };
        refused(old - 1, new, &r1, &r2, &proof);
        refused(old + 1, new, &r1, &r2, &proof);
        refused(old ^ 2, new, &r1, &r2, &proof);
        refused(old, new * 2, &r1, &r2, &proof);
        if new / 2 != old || !proof.is_empty() {
            refused(old, new / 2, &r1, &r2, &proof);
        }
        if old != new {
            refused(old, new, &r2, &r1, &proof);
            refused(old, new, &r1, &r2, &[]);
            refused(old, new, &empty_root(), &r2, &proof);
        }
        for extra in [r1, r2] {
            let mut longer = proof.clone();
            longer.push(extra);
            refused(old, new, &r1, &r2, &longer);
            let mut prefixed = vec![extra];
            prefixed.extend_from_slice(&proof);
            refused(old, new, &r1, &r2, &prefixed);
        }
        for i in 0..proof.len() {
            let mut flipped = proof.clone();
            flipped[i][0] ^= 16;
            refused(old, new, &r1, &r2, &flipped);
        }
        if !proof.is_empty() {
            refused(old, new, &r1, &r2, &proof[..proof.len() - 1]);
        }
    }
    // An empty old tree proves nothing.
    assert!(!verify_consistency(
        0,
        1,
        &empty_root(),
        &hex(ROOTS[1]),
        &[]
    ));
}

/// RFC 6962's definition, written out directly: the oracle for random
/// trees.
fn mth(leaves: &[Hash]) -> Hash {
    if leaves.is_empty() {
        return empty_root();
    }
    if leaves.len() == 1 {
        return leaves[0];
    }
    let mut k = 1;
    while k * 2 < leaves.len() {
        k *= 2;
    }
    node_hash(&mth(&leaves[..k]), &mth(&leaves[k..]))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn every_proof_of_random_trees_verifies_and_the_frontier_agrees(n in 1usize..70, seed in any::<u64>()) {
        let leaves: Vec<Hash> = (0..n).map(|i| leaf_hash(&(seed ^ i as u64).to_be_bytes())).collect();
        let mut frontier = MerkleFrontier::new();
        for (i, leaf) in leaves.iter().enumerate() {
            frontier.push(*leaf);
            prop_assert_eq!(frontier.root(), mth(&leaves[..=i]));
        }
        let root = mth(&leaves);
        for i in 0..n {
            let proof = inclusion_proof(&leaves, i).unwrap();
            prop_assert!(verify_inclusion(&leaves[i], i as u64, n as u64, &proof, &root));
        }
        for m in 1..=n {
            let proof = consistency_proof(&leaves, m).unwrap();
            prop_assert!(verify_consistency(m as u64, n as u64, &mth(&leaves[..m]), &root, &proof));
        }
    }
}

// Signed notes.

const PETER_SKEY: &str =
    "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
const PETER_VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
const ENOCH_VKEY: &str = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop";
const TEXT: &str = "If you think cryptography is the answer to your problem,\n\
                    then you don't know what your problem is.\n";
const PETER_SIG: &str = "\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";
const ENOCH_SIG: &str = "\u{2014} EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n";

#[test]
fn signing_reproduces_gos_signed_note_byte_for_byte() {
    let key = SigningKey::from_private_line(PETER_SKEY).unwrap();
    assert_eq!(key.verifier().to_string(), PETER_VKEY);
    assert_eq!(key.sign(TEXT).unwrap(), format!("{TEXT}\n{PETER_SIG}"));
}

#[test]
fn notes_verify_under_trusted_keys_and_ignore_others() {
    let peter: VerifierKey = PETER_VKEY.parse().unwrap();
    let enoch: VerifierKey = ENOCH_VKEY.parse().unwrap();
    let both = format!("{TEXT}\n{PETER_SIG}{ENOCH_SIG}");
    let note = SignedNote::parse(both.as_bytes()).unwrap();
    assert_eq!(note.text(), TEXT);
    assert_eq!(note.verify(std::slice::from_ref(&peter)).unwrap(), &peter);
    assert_eq!(note.verify(std::slice::from_ref(&enoch)).unwrap(), &enoch);
    assert!(matches!(
        note.verify(&[]),
        Err(NoteError::UnknownKey { signers }) if signers == "PeterNeumann+c74f20a3, EnochRoot+af0cfe78"
    ));
    // A signature by a trusted key that does not verify sinks the note.
    let forged = format!("{TEXT}\n{}ABCD{}", &PETER_SIG[..60], &PETER_SIG[60..]);
    assert!(matches!(
        SignedNote::parse(forged.as_bytes()).unwrap().verify(&[peter]),
        Err(NoteError::BadSignature { key }) if key == "PeterNeumann+c74f20a3"
    ));
}

#[test]
fn malformed_notes_and_keys_are_refused() {
    let malformed = [
        format!("{TEXT}\n{}", &PETER_SIG[..PETER_SIG.len() - 1]),
        format!("\x01{TEXT}\n{PETER_SIG}"),
        format!(
            "{TEXT}\n\u{2014} Bad Name x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
        ),
        format!("{TEXT}\n{PETER_SIG}Unexpected line.\n"),
        format!("{TEXT}\n{}", PETER_SIG.repeat(101)),
    ];
    for note in &malformed {
        // Including 101 signature lines, even identical ones.
        let result = SignedNote::parse(note.as_bytes());
        assert!(matches!(result, Err(NoteError::Malformed)), "{note:?}");
    }
    assert!(matches!(
        SignedNote::parse(b"\xff\n\n"),
        Err(NoteError::Malformed)
    ));
    assert!(matches!(
        SignedNote::parse(TEXT.as_bytes()),
        Err(NoteError::Unsigned)
    ));
    assert!(matches!(
        SignedNote::parse(format!("{TEXT}\n").as_bytes()),
        Err(NoteError::Unsigned)
    ));
    // Every proper prefix and every one-byte change of a key is refused.
    for key in [PETER_VKEY] {
        for end in 0..key.len() {
            assert!(
                key[..end].parse::<VerifierKey>().is_err(),
                "{}",
                &key[..end]
            );
        }
        for i in 0..key.len() {
            let mut changed = key.as_bytes().to_vec();
            changed[i] = changed[i].wrapping_add(1);
            if let Ok(changed) = String::from_utf8(changed) {
                assert!(changed.parse::<VerifierKey>().is_err(), "{changed}");
            }
        }
    }
    for end in 0..PETER_SKEY.len() {
        assert!(SigningKey::from_private_line(&PETER_SKEY[..end]).is_err());
    }
    for bad in [
        "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==",
        "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
    ] {
        assert!(bad.parse::<VerifierKey>().is_err(), "{bad}");
    }
}

#[test]
fn the_c2sp_examples_parse_with_text_split_at_the_last_empty_line() {
    let poem = "Ognuno sta solo sul cuor della terra\ntrafitto da un raggio di sole:\n\ned \u{e8} subito sera.\n\n\u{2014} quasimodo.example/salvatore NnugSzTjtVAewIS+Z/iJhUPeFDkO/5QQ2i5ddnGITLlC+EhfLW9oJKONrMouFSQU0xMcXxj99ihAQwaqP3ZekRwNtIc=\n";
    let note = SignedNote::parse(poem.as_bytes()).unwrap();
    assert_eq!(
        note.text(),
        "Ognuno sta solo sul cuor della terra\ntrafitto da un raggio di sole:\n\ned \u{e8} subito sera.\n"
    );
    assert_eq!(note.signatures()[0].id, [0x36, 0x7b, 0xa0, 0x4b]);

    let sofa = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n\n\u{2014} example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n\u{2014} witness.example.com/w1 jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlrDJsX3b2oyin1nPZqhf5nNo0xUe+mbIUBkBIfZ+qnA==\n";
    let note = SignedNote::parse(sofa.as_bytes()).unwrap();
    let checkpoint = Checkpoint::parse_text(note.text()).unwrap();
    assert_eq!(checkpoint.origin, "example.com/behind-the-sofa");
    assert_eq!(checkpoint.size, 20_852_163);
    assert_eq!(
        checkpoint.root,
        hex("0ac5186a91863e8e1d90c808014aa89bf5da8e3ee1d9f07630f0378f68f1ab62")
    );
    assert_eq!(note.signatures().len(), 2);
    // No key is published for it: with any key it is "signed by no trusted
    // key", never accepted.
    let ours = SigningKey::generate("example.com/behind-the-sofa").unwrap();
    assert!(matches!(
        Checkpoint::open(sofa.as_bytes(), &[ours.verifier()]),
        Err(CheckpointError::UnknownKey { .. })
    ));
    // Go's tlog checkpoint body.
    let go = Checkpoint::parse_text(
        "go.sum database tree\n123456789012\nTszzRgjTG6xce+z2AG31kAXYKBgQVtCSCE40HmuwBb0=\n",
    )
    .unwrap();
    assert_eq!(go.root, leaf_hash(b"hello world"));
}

#[test]
fn each_way_a_checkpoint_fails_is_its_own_result() {
    let key = SigningKey::generate("example.com/approvals").unwrap();
    let checkpoint = Checkpoint::new("example.com/approvals", 8, hex(ROOTS[8]));
    let signed = checkpoint.sign(&key).unwrap();
    let trusted = [key.verifier()];
    assert_eq!(
        Checkpoint::open(signed.as_bytes(), &trusted).unwrap(),
        checkpoint
    );

    assert!(matches!(
        Checkpoint::open(checkpoint.text().as_bytes(), &trusted),
        Err(CheckpointError::Unsigned)
    ));
    assert!(matches!(
        Checkpoint::open(format!("{}\n", checkpoint.text()).as_bytes(), &trusted),
        Err(CheckpointError::Unsigned)
    ));
    assert!(matches!(
        Checkpoint::open(b"example.com/approvals\n8\n", &trusted),
        Err(CheckpointError::Malformed(_))
    ));
    let other = SigningKey::generate("example.com/approvals").unwrap();
    assert!(matches!(
        Checkpoint::open(signed.as_bytes(), &[other.verifier()]),
        Err(CheckpointError::UnknownKey { .. })
    ));
    let tampered = signed.replacen("\n8\n", "\n9\n", 1);
    assert!(matches!(
        Checkpoint::open(tampered.as_bytes(), &trusted),
        Err(CheckpointError::BadSignature { .. })
    ));
    // A checkpoint of another log, signed by that log's own trusted key.
    let foreign = Checkpoint::new("example.com/other", 8, hex(ROOTS[8]))
        .sign(&key)
        .unwrap();
    assert!(matches!(
        Checkpoint::open(foreign.as_bytes(), &trusted),
        Err(CheckpointError::WrongOrigin { expected, found })
            if expected == "example.com/approvals" && found == "example.com/other"
    ));
    for bad in [
        "o\n08\nXcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=\n",
        "o\n0xabcdef\nXcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=\n",
        "o\n8\nXcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg\n",
        "o\n8\nXcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=\nextension\n",
        "\n8\nXcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=\n",
    ] {
        assert!(Checkpoint::parse_text(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn a_second_implementation_reads_our_notes_and_we_read_its() {
    // signed_note (Cloudflare's port of Go's sumdb/note).
    let ours = SigningKey::from_private_line(PETER_SKEY).unwrap();
    let signed = Checkpoint::new("PeterNeumann", 8, hex(ROOTS[8]))
        .sign(&ours)
        .unwrap();
    let verifier = signed_note::StandardVerifier::new(PETER_VKEY).unwrap();
    let list = signed_note::VerifierList::new(vec![Box::new(verifier)]);
    let theirs = signed_note::Note::from_bytes(signed.as_bytes()).unwrap();
    let (verified, unverified) = theirs.verify(&list).unwrap();
    assert_eq!((verified.len(), unverified.len()), (1, 0));
    assert_eq!(
        theirs.text(),
        Checkpoint::new("PeterNeumann", 8, hex(ROOTS[8]))
            .text()
            .as_bytes()
    );

    let signer = signed_note::StandardSigner::new(PETER_SKEY).unwrap();
    let mut note = signed_note::Note::new(TEXT.as_bytes(), &[]).unwrap();
    note.add_sigs(&[&signer]).unwrap();
    let bytes = note.to_bytes();
    let parsed = SignedNote::parse(&bytes).unwrap();
    assert_eq!(
        parsed.verify(&[ours.verifier()]).unwrap().name(),
        "PeterNeumann"
    );
    assert_eq!(bytes, ours.sign(TEXT).unwrap().into_bytes());

    // A fresh key of ours, checked by theirs.
    let fresh = SigningKey::generate("example.com/approvals").unwrap();
    let verifier = signed_note::StandardVerifier::new(&fresh.verifier().to_string()).unwrap();
    let list = signed_note::VerifierList::new(vec![Box::new(verifier)]);
    let signed = fresh
        .sign("example.com/approvals\n0\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n")
        .unwrap();
    assert!(
        signed_note::Note::from_bytes(signed.as_bytes())
            .unwrap()
            .verify(&list)
            .is_ok()
    );
}

#[test]
fn signing_key_files_are_private_never_overwritten_and_never_shown() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("signing.key");
    let key = SigningKey::from_private_line(PETER_SKEY).unwrap();
    key.write_new_file(&path).unwrap();
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        format!("{PETER_SKEY}\n")
    );
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert!(matches!(
        key.write_new_file(&path),
        Err(NoteError::Exists { .. })
    ));
    let read = SigningKey::read_file(&path).unwrap();
    assert_eq!(read.verifier(), key.verifier());
    let shown = format!("{key:?}");
    assert!(!shown.contains("AYEKFALV"), "{shown}");
    // A key whose id does not match: refused, and the error shows no key.
    let wrong_id = PETER_SKEY.replace("c74f20a3", "c74f20a4");
    std::fs::write(dir.path().join("bad"), &wrong_id).unwrap();
    let err = SigningKey::read_file(dir.path().join("bad")).unwrap_err();
    assert!(matches!(err, NoteError::KeyFileFormat { .. }), "{err}");
    assert!(!err.to_string().contains("AYEKFALV"), "{err}");
}

#[test]
fn a_log_checked_against_its_checkpoint_is_consistent_truncated_or_rewritten() {
    let lines: Vec<String> = (0..10).map(|n| format!("{{\"seq\":{n}}}")).collect();
    let log: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let leaves: Vec<Hash> = lines.iter().map(|l| leaf_hash(l.as_bytes())).collect();
    let at = |n: usize| Checkpoint::new("o", n as u64, root(&leaves[..n]));
    assert_eq!(
        check_log(log.as_bytes(), &at(7)).unwrap(),
        Coverage::Consistent {
            covered: 7,
            beyond: 3
        }
    );
    assert_eq!(
        check_log(log.as_bytes(), &at(10)).unwrap(),
        Coverage::Consistent {
            covered: 10,
            beyond: 0
        }
    );
    assert_eq!(
        check_log(log.as_bytes(), &at(0)).unwrap(),
        Coverage::Consistent {
            covered: 0,
            beyond: 10
        }
    );
    // Cut off after 5 records: truncated, with both counts.
    let cut: String = lines[..5].iter().map(|l| format!("{l}\n")).collect();
    assert_eq!(
        check_log(cut.as_bytes(), &at(7)).unwrap(),
        Coverage::Truncated {
            records: 5,
            signed: 7
        }
    );
    // One record changed inside the covered part, or the root forged.
    let edited = log.replacen("{\"seq\":3}", "{\"seq\":33}", 1);
    assert_eq!(
        check_log(edited.as_bytes(), &at(7)).unwrap(),
        Coverage::Rewritten { signed: 7 }
    );
    let mut forged = at(7);
    forged.root[0] ^= 1;
    assert_eq!(
        check_log(log.as_bytes(), &forged).unwrap(),
        Coverage::Rewritten { signed: 7 }
    );
    // An edit after the covered part is the chain's to find, not the tree's.
    let later = log.replacen("{\"seq\":9}", "{\"seq\":99}", 1);
    assert_eq!(
        check_log(later.as_bytes(), &at(7)).unwrap(),
        Coverage::Consistent {
            covered: 7,
            beyond: 3
        }
    );
}

#[test]
fn a_cosigned_checkpoint_opens_whatever_the_order_of_its_signatures() {
    let log_key = SigningKey::generate("example.com/approvals").unwrap();
    let witness = SigningKey::generate("witness.example/w1").unwrap();
    let checkpoint = Checkpoint::new("example.com/approvals", 8, hex(ROOTS[8]));
    let text = checkpoint.text();
    let line = |key: &SigningKey| {
        let signed = key.sign(&text).unwrap();
        signed[text.len() + 1..].to_owned()
    };
    // The witness's line first, then the log's.
    let cosigned = format!("{text}\n{}{}", line(&witness), line(&log_key));
    let trusted = [witness.verifier(), log_key.verifier()];
    assert_eq!(
        Checkpoint::open(cosigned.as_bytes(), &trusted).unwrap(),
        checkpoint
    );
    // Signed by the witness alone: not the log's signature.
    let witness_only = format!("{text}\n{}", line(&witness));
    assert!(matches!(
        Checkpoint::open(witness_only.as_bytes(), &trusted),
        Err(CheckpointError::UnknownKey { .. })
    ));
}

#[test]
fn a_log_cut_off_inside_its_last_line_is_truncated_not_rewritten() {
    let lines: Vec<String> = (0..10).map(|n| format!("{{\"seq\":{n}}}")).collect();
    let leaves: Vec<Hash> = lines.iter().map(|l| leaf_hash(l.as_bytes())).collect();
    let checkpoint = Checkpoint::new("o", 10, root(&leaves));
    let mut log: String = lines[..9].iter().map(|l| format!("{l}\n")).collect();
    log.push_str("{\"seq\":9");
    assert_eq!(
        check_log(log.as_bytes(), &checkpoint).unwrap(),
        Coverage::Truncated {
            records: 9,
            signed: 10
        }
    );
    assert_eq!(super::leaf_hashes(log.as_bytes()).unwrap().len(), 9);
}

#[test]
fn a_proof_document_holds_only_its_request_s_records_in_order_once() {
    let lines: Vec<String> = (0..6)
        .map(|n| format!("{{\"request_id\":\"r{}\",\"seq\":{n}}}", n % 2))
        .collect();
    let log: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let leaves: Vec<Hash> = lines.iter().map(|l| leaf_hash(l.as_bytes())).collect();
    let key = SigningKey::generate("example.com/approvals").unwrap();
    let signed = Checkpoint::new("example.com/approvals", 5, root(&leaves[..5]))
        .sign(&key)
        .unwrap();
    let (document, after) = ProofDocument::build(log.as_bytes(), "r1", signed.as_bytes()).unwrap();
    // r1 is at 1, 3 (covered) and 5 (after the checkpoint).
    assert_eq!(after, 1);
    assert_eq!(
        document.records.iter().map(|r| r.index).collect::<Vec<_>>(),
        [1, 3]
    );
    let trusted = [key.verifier()];
    let round_trip = ProofDocument::from_json(&document.to_json()).unwrap();
    assert_eq!(round_trip.check(&trusted).unwrap().size, 5);

    let mut twice = document.clone();
    twice.records.push(document.records[0].clone());
    assert!(matches!(
        twice.check(&trusted),
        Err(ProofError::Malformed(_))
    ));
    let mut moved = document.clone();
    moved.records[0].index = 0;
    assert!(matches!(
        moved.check(&trusted),
        Err(ProofError::WrongRecord { index: 0, .. })
    ));
    assert!(matches!(
        ProofDocument::build(log.as_bytes(), "r9", signed.as_bytes()),
        Err(ProofError::NothingToProve { after: 0, .. })
    ));
}
