//! Random bytes for the values a request makes (session ids, link nonces), taken from the
//! kernel's generator a block at a time. A durable signup needs two of them, and a system call
//! for each of a few dozen bytes was a visible share of its CPU; one call now serves about a
//! dozen signups. Every byte comes from the kernel's generator and is handed out once: a used
//! byte is wiped from the block. Long-lived secrets (the installation's key, API tokens, webhook
//! secrets) are made rarely and still read the kernel's generator directly.

use std::cell::RefCell;

/// Larger than any value taken from it, so a value never spans two reads of the kernel's.
const BLOCK: usize = 512;
/// Longer requests go straight to the kernel rather than drain the block.
const LARGEST: usize = 64;

struct Block {
    bytes: [u8; BLOCK],
    /// Bytes from here on have not been handed out.
    next: usize,
}

thread_local! {
    static BLOCK_OF_THIS_THREAD: RefCell<Block> =
        const { RefCell::new(Block { bytes: [0; BLOCK], next: BLOCK }) };
}

/// Fills `out` with random bytes no one else has been or will be given.
pub fn fill(out: &mut [u8]) -> Result<(), getrandom::Error> {
    if out.len() > LARGEST {
        return getrandom::fill(out);
    }
    BLOCK_OF_THIS_THREAD.with_borrow_mut(|block| {
        if BLOCK - block.next < out.len() {
            getrandom::fill(&mut block.bytes)?;
            block.next = 0;
        }
        let taken = &mut block.bytes[block.next..block.next + out.len()];
        out.copy_from_slice(taken);
        taken.fill(0);
        block.next += out.len();
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn values_are_never_repeated_across_blocks_and_threads() {
        let draw = || {
            (0..2_000)
                .map(|i| {
                    // Odd sizes too, so values straddle where a block would run out.
                    let mut value = vec![0u8; 16 + i % 17];
                    fill(&mut value).expect("randomness");
                    value
                })
                .collect::<Vec<_>>()
        };
        let other = std::thread::spawn(draw);
        let mine = draw();
        let theirs = other.join().expect("thread");
        let mut seen = HashSet::new();
        for value in mine.iter().chain(&theirs) {
            assert!(value.iter().any(|&b| b != 0), "a value is all zeros");
            assert!(seen.insert(&value[..16]), "a value was handed out twice");
        }
    }

    #[test]
    fn a_used_byte_is_wiped_and_large_requests_bypass_the_block() {
        let mut value = [0u8; 32];
        fill(&mut value).expect("randomness");
        BLOCK_OF_THIS_THREAD.with_borrow(|block| {
            assert_eq!(block.next, 32);
            assert!(block.bytes[..32].iter().all(|&b| b == 0), "handed-out bytes stay in memory");
            assert!(block.bytes[32..].iter().any(|&b| b != 0), "the rest was filled at once");
        });
        let mut large = [0u8; LARGEST + 1];
        fill(&mut large).expect("randomness");
        BLOCK_OF_THIS_THREAD.with_borrow(|block| assert_eq!(block.next, 32));
    }
}
