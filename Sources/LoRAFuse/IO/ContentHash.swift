import Foundation

/// A 64-bit content hash of a file (8-byte words folded with multiply–xor–rotate, the tail
/// byte by byte, the length last): a cache key, not a cryptographic digest. Reads the file
/// through its memory mapping.
public enum ContentHash {
    /// The file's hash at `path`, 16 hex digits (read through a memory map).
    public static func of(path: String) throws -> String {
        let file = try MappedFile(path: path)
        guard let base = file.baseAddress else { return String(format: "%016llx", UInt64(0)) }
        var hash: UInt64 = 0x9E37_79B9_7F4A_7C15
        let words = file.size / 8
        for index in 0..<words {
            let word = base.loadUnaligned(fromByteOffset: index * 8, as: UInt64.self)
            hash = ((hash ^ word) &* 0xFF51_AFD7_ED55_8CCD)
            hash = (hash << 31) | (hash >> 33)
        }
        for index in (words * 8)..<file.size {
            hash = (hash ^ UInt64(base.load(fromByteOffset: index, as: UInt8.self))) &* 0x0000_0100_0000_01B3
        }
        hash ^= UInt64(file.size)
        hash = (hash ^ (hash >> 33)) &* 0xC4CE_B9FE_1A85_EC53
        return String(format: "%016llx", hash ^ (hash >> 33))
    }
}
