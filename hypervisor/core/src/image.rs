//! The arm64 Linux `Image` header (Documentation/arch/arm64/booting.rst).
//!
//! Guest kernels and our own test guests carry it, so one loader serves both.

/// "ARM\x64" at byte 56.
pub const MAGIC: u32 = 0x644d_5241;
/// Size of the header in bytes.
pub const HEADER_SIZE: usize = 64;
/// Kernels before 3.17 leave image_size 0 and expect this text_offset.
const LEGACY_TEXT_OFFSET: u64 = 0x8_0000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageError {
    /// Fewer bytes than a header.
    TooShort,
    /// The magic number at byte 56 is not "ARM\x64".
    BadMagic,
    /// flags bit 0 says big-endian; we run little-endian guests only.
    BigEndian,
    /// text_offset or image_size make no sense (not aligned, or smaller than the file).
    BadLayout,
}

impl core::fmt::Display for ImageError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            ImageError::TooShort => "file is shorter than an arm64 Image header (64 bytes)",
            ImageError::BadMagic => "no arm64 Image magic \"ARM\\x64\" at offset 56",
            ImageError::BigEndian => "big-endian arm64 Image is not supported",
            ImageError::BadLayout => "arm64 Image header has an invalid text_offset or image_size",
        })
    }
}

/// Page size the kernel was built for (flags bits 2:1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageSize {
    Unspecified,
    K4,
    K16,
    K64,
}

/// The parts of the header a loader needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageHeader {
    /// Offset from a 2 MiB aligned base at which the image must be placed.
    pub text_offset: u64,
    /// Bytes the image occupies once loaded, including its BSS (at least the file size).
    pub image_size: u64,
    pub page_size: PageSize,
    /// flags bit 3: the image may be placed anywhere in physical memory (else: as low as possible).
    pub phys_placement_anywhere: bool,
}

fn le64(b: &[u8], off: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(v)
}

/// No image is larger than this (far more than any guest's RAM).
const MAX_IMAGE_END: u64 = 1 << 40;

impl ImageHeader {
    /// Parses the header of an image whose whole file is `file_len` bytes long.
    pub fn parse(header: &[u8], file_len: u64) -> Result<Self, ImageError> {
        if header.len() < HEADER_SIZE || file_len < HEADER_SIZE as u64 {
            return Err(ImageError::TooShort);
        }
        let magic = u32::from_le_bytes([header[56], header[57], header[58], header[59]]);
        if magic != MAGIC {
            return Err(ImageError::BadMagic);
        }
        let mut text_offset = le64(header, 8);
        let mut image_size = le64(header, 16);
        let flags = le64(header, 24);
        if image_size == 0 {
            // Pre-3.17 kernel: fixed text_offset, size unknown beyond the file.
            text_offset = LEGACY_TEXT_OFFSET;
            image_size = file_len;
        }
        if flags & 1 != 0 {
            return Err(ImageError::BigEndian);
        }
        // The image must be placeable: text_offset + image_size is what the loader reserves,
        // so it must not wrap (found by the property tests: a size near 2^64 did).
        if text_offset % 4096 != 0 || text_offset >= (1 << 21) || image_size < file_len || text_offset.checked_add(image_size).is_none_or(|end| end > MAX_IMAGE_END) {
            return Err(ImageError::BadLayout);
        }
        let page_size = match (flags >> 1) & 3 {
            1 => PageSize::K4,
            2 => PageSize::K16,
            3 => PageSize::K64,
            _ => PageSize::Unspecified,
        };
        Ok(ImageHeader { text_offset, image_size, page_size, phys_placement_anywhere: flags & 8 != 0 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(text_offset: u64, image_size: u64, flags: u64) -> [u8; 64] {
        let mut h = [0u8; 64];
        h[8..16].copy_from_slice(&text_offset.to_le_bytes());
        h[16..24].copy_from_slice(&image_size.to_le_bytes());
        h[24..32].copy_from_slice(&flags.to_le_bytes());
        h[56..60].copy_from_slice(&MAGIC.to_le_bytes());
        h
    }

    #[test]
    fn refuses_sizes_that_wrap() {
        assert_eq!(ImageHeader::parse(&header(0x8_0000, u64::MAX - 1, 0), 0x1000), Err(ImageError::BadLayout));
        assert_eq!(ImageHeader::parse(&header(0, 1 << 41, 0), 0x1000), Err(ImageError::BadLayout));
    }

    #[test]
    fn parses_modern_header() {
        let h = ImageHeader::parse(&header(0, 0x200_0000, 0xa), 0x100_0000).unwrap();
        assert_eq!(h.text_offset, 0);
        assert_eq!(h.image_size, 0x200_0000);
        assert_eq!(h.page_size, PageSize::K4);
        assert!(h.phys_placement_anywhere);
    }

    #[test]
    fn legacy_header_gets_default_offset() {
        let h = ImageHeader::parse(&header(0x1234, 0, 0), 0x5000).unwrap();
        assert_eq!(h.text_offset, 0x8_0000);
        assert_eq!(h.image_size, 0x5000);
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(ImageHeader::parse(&[0u8; 10], 10), Err(ImageError::TooShort));
        let mut h = header(0, 0x1000, 0);
        h[56] = b'X';
        assert_eq!(ImageHeader::parse(&h, 0x1000), Err(ImageError::BadMagic));
        assert_eq!(ImageHeader::parse(&header(0, 0x1000, 1), 0x1000), Err(ImageError::BigEndian));
        assert_eq!(ImageHeader::parse(&header(0x10, 0x1000, 0), 0x1000), Err(ImageError::BadLayout));
        assert_eq!(ImageHeader::parse(&header(0, 0x1000, 0), 0x2000), Err(ImageError::BadLayout));
        assert_eq!(ImageHeader::parse(&header(0x20_0000, 0x1000, 0), 0x1000), Err(ImageError::BadLayout));
    }
}
