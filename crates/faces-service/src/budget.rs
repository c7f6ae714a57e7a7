//! The memory budget for photos being processed: each is admitted by what it
//! really costs (its file, its decoded pixels in the stored bit depth and
//! channels, their 8-bit RGB copy and the marked copy's JPEG), so that any mix of
//! concurrent uploads stays inside one bound for the process.

use std::sync::Arc;

use faces_detect::Mark;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Permits count KiB: a semaphore holds at most `u32::MAX` per acquire.
const UNIT: u64 = 1024;

/// Bytes of memory for photos in flight, shared by this process's workers.
#[derive(Debug, Clone)]
pub struct MemoryBudget {
    permits: Arc<Semaphore>,
    bytes: u64,
}

/// What processing one photo holds at its peak: the file, then the larger of the
/// decode ([`faces_detect::decode_bytes`]) and the RGB pixels with the larger of the
/// JPEG of the marked copy being written (at most half their size at this quality)
/// and what `mark` copies of a face's region, which may be the whole photo: once to
/// pixelate it, three times to blur it (the region and the blur's two buffers).
pub fn photo_cost(file_bytes: u64, width: u32, height: u32, decode_bytes: u64, mark: Mark) -> u64 {
    let rgb = u64::from(width) * u64::from(height) * 3;
    let marking = match mark {
        Mark::Blur => 3 * rgb,
        Mark::Pixelate => rgb,
        Mark::Box | Mark::None => 0,
    };
    file_bytes + decode_bytes.max(rgb + (rgb / 2).max(marking))
}

impl MemoryBudget {
    pub fn new(bytes: u64) -> Self {
        let units = (bytes / UNIT).clamp(1, u64::from(u32::MAX));
        Self {
            permits: Arc::new(Semaphore::new(units as usize)),
            bytes,
        }
    }

    /// The whole budget in bytes.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Whether a photo costing `cost` can ever be processed.
    pub fn admits(&self, cost: u64) -> bool {
        cost <= self.bytes
    }

    /// Waits until `cost` bytes are free and holds them until the permit drops.
    /// Waiters are served in order, so a large photo is not starved by small ones.
    /// A cost over the whole budget (a row from before the budget) waits for all of it.
    pub async fn reserve(&self, cost: u64) -> OwnedSemaphorePermit {
        let total = (self.bytes / UNIT).clamp(1, u64::from(u32::MAX));
        let units = cost.div_ceil(UNIT).clamp(1, total) as u32;
        self.permits
            .clone()
            .acquire_many_owned(units)
            .await
            .expect("the budget's semaphore is never closed")
    }
}

/// Parses a size such as `1GiB`, `512MiB`, `300M` or `1048576` (units are binary:
/// K, M and G with or without `i`/`B` all mean powers of 1024).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("“{text}” is not a size such as 512MiB or 1GiB"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => return Err(format!("unknown unit in “{text}” (use KiB, MiB or GiB)")),
    };
    number
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("“{text}” is too large"))
}

/// `bytes` as MiB for messages.
pub fn mib(bytes: u64) -> String {
    format!("{:.0} MiB", bytes as f64 / (1024.0 * 1024.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_in_binary_units() {
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("300M"), Ok(300 << 20));
        assert_eq!(parse_size("64 KiB"), Ok(64 << 10));
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert!(parse_size("1TiB").is_err());
        assert!(parse_size("lots").is_err());
    }

    #[tokio::test]
    async fn reservations_wait_until_their_bytes_are_free() {
        let budget = MemoryBudget::new(10 << 20);
        let first = budget.reserve(6 << 20).await;
        let waiting = std::time::Duration::from_millis(50);
        let second = tokio::time::timeout(waiting, budget.reserve(6 << 20)).await;
        assert!(second.is_err(), "two 6 MiB photos in a 10 MiB budget");
        let small = tokio::time::timeout(waiting, budget.reserve(4 << 20)).await;
        assert!(small.is_ok(), "4 MiB fits beside 6 MiB");
        drop((first, small));
        let all = tokio::time::timeout(waiting, budget.reserve(10 << 20)).await;
        assert!(all.is_ok(), "all of it is free again");
        assert!(budget.admits(10 << 20));
        assert!(!budget.admits((10 << 20) + 1));
    }

    #[test]
    fn a_photo_costs_at_least_its_rgb_pixels_and_their_jpeg() {
        // A 16-bit RGBA photo: its decode is the peak.
        assert_eq!(photo_cost(100, 10, 10, 1100, Mark::Box), 1200);
        // An RGB JPEG: pixels plus the marked copy's JPEG.
        assert_eq!(photo_cost(100, 10, 10, 300, Mark::Box), 100 + 450);
        assert_eq!(photo_cost(100, 10, 10, 300, Mark::None), 100 + 450);
        // Anonymising copies the face's region, up to the whole photo.
        assert_eq!(photo_cost(100, 10, 10, 300, Mark::Pixelate), 100 + 600);
        assert_eq!(photo_cost(100, 10, 10, 300, Mark::Blur), 100 + 1200);
        assert_eq!(photo_cost(100, 10, 10, 2000, Mark::Blur), 100 + 2000);
    }
}
