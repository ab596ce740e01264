/// SentencePiece's precompiled normalisation map (`precompiled_charsmap`: a darts-clone
/// double-array trie over UTF-8 keys, then the NUL-terminated replacement strings), applied
/// as Hugging Face tokenizers' `Precompiled` normalizer does: per grapheme cluster, the
/// whole cluster (when shorter than 6 bytes) or else each of its characters is looked up,
/// and the shortest key that prefixes it gives the replacement.
public struct PrecompiledCharsmap: Sendable {
    private let units: [UInt32]
    private let replacements: [UInt8]

    public init(_ blob: [UInt8]) throws(TokenizerError) {
        guard blob.count >= 4 else { throw TokenizerError(path: "precompiled_charsmap", reason: "shorter than its 4-byte header") }
        let trieBytes = Int(blob[0]) | Int(blob[1]) << 8 | Int(blob[2]) << 16 | Int(blob[3]) << 24
        guard trieBytes % 4 == 0, trieBytes >= 4, 4 + trieBytes <= blob.count else {
            throw TokenizerError(path: "precompiled_charsmap", reason: "trie size \(trieBytes) does not fit in \(blob.count) bytes")
        }
        units = stride(from: 4, to: 4 + trieBytes, by: 4).map {
            UInt32(blob[$0]) | UInt32(blob[$0 + 1]) << 8 | UInt32(blob[$0 + 2]) << 16 | UInt32(blob[$0 + 3]) << 24
        }
        replacements = Array(blob[(4 + trieBytes)...])
    }

    private static func offset(_ unit: UInt32) -> Int { Int((unit >> 10) << ((unit & (1 << 9)) >> 6)) }
    private static func label(_ unit: UInt32) -> UInt32 { unit & ((1 << 31) | 0xFF) }
    private static func hasLeaf(_ unit: UInt32) -> Bool { (unit >> 8) & 1 == 1 }
    private static func value(_ unit: UInt32) -> Int { Int(unit & ((1 << 31) - 1)) }

    /// The replacement of the shortest key that prefixes `key`, if any.
    func replacement(_ key: some Collection<UInt8>) -> [UInt8]? {
        var position = 0
        guard !units.isEmpty else { return nil }
        position ^= Self.offset(units[0])
        for byte in key {
            if byte == 0 { break }
            position ^= Int(byte)
            guard position < units.count else { return nil }
            let unit = units[position]
            guard Self.label(unit) == UInt32(byte) else { return nil }
            position ^= Self.offset(unit)
            guard position < units.count else { return nil }
            if Self.hasLeaf(unit) {
                let start = Self.value(units[position])
                guard start < replacements.count else { return nil }
                let end = replacements[start...].firstIndex(of: 0) ?? replacements.count
                return Array(replacements[start..<end])
            }
        }
        return nil
    }

    public func normalize(_ text: String) -> String {
        var output: [UInt8] = []
        output.reserveCapacity(text.utf8.count)
        for grapheme in text {
            let bytes = Array(String(grapheme).utf8)
            if bytes.count < 6, let replaced = replacement(bytes) {
                output.append(contentsOf: replaced)
                continue
            }
            for scalar in grapheme.unicodeScalars {
                let scalarBytes = Array(String(scalar).utf8)
                output.append(contentsOf: replacement(scalarBytes) ?? scalarBytes)
            }
        }
        return String(decoding: output, as: UTF8.self)
    }
}
