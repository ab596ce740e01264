import LoRAFuse
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

    /// Every key that prefixes `key`, shortest first: (its length in bytes, its replacement).
    func prefixMatches(_ key: some Collection<UInt8>) -> [(length: Int, replacement: [UInt8])] {
        var matches: [(Int, [UInt8])] = []
        guard !units.isEmpty else { return matches }
        var position = Self.offset(units[0])
        for (index, byte) in key.enumerated() {
            if byte == 0 { break }
            position ^= Int(byte)
            guard position < units.count else { break }
            let unit = units[position]
            guard Self.label(unit) == UInt32(byte) else { break }
            position ^= Self.offset(unit)
            guard position < units.count else { break }
            if Self.hasLeaf(unit) {
                let start = Self.value(units[position])
                guard start < replacements.count else { break }
                let end = replacements[start...].firstIndex(of: 0) ?? replacements.count
                matches.append((index + 1, Array(replacements[start..<end])))
            }
        }
        return matches
    }

    /// The replacement of the shortest key that prefixes `key`, if any (Hugging Face's rule).
    func replacement(_ key: some Collection<UInt8>) -> [UInt8]? { prefixMatches(key).first?.replacement }

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

    /// SentencePiece's own normaliser (what the slow `T5Tokenizer` runs): the longest key at
    /// each byte position, else one character; leading, trailing and repeated spaces dropped,
    /// `▁` before the text (`addDummyPrefix`) and for every space.
    public static func sentencePieceNormalize(_ text: String, map: PrecompiledCharsmap?, addDummyPrefix: Bool) -> String {
        let input = Array(text.utf8)
        func next(_ at: Int) -> (text: ArraySlice<UInt8>, length: Int) {
            if let map, let longest = map.prefixMatches(input[at...]).max(by: { $0.length < $1.length }) {
                return (longest.replacement[...], longest.length)
            }
            let lead = input[at]
            let length = min(input.count - at, lead < 0x80 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4)
            return (input[at..<at + length], length)
        }
        var position = 0
        while position < input.count {
            let piece = next(position)
            guard piece.text.elementsEqual([0x20]) else { break }
            position += piece.length
        }
        guard position < input.count else { return "" }
        let mark: [UInt8] = [0xE2, 0x96, 0x81]  // ▁
        var output: [UInt8] = addDummyPrefix ? mark : []
        var previousIsSpace = true
        while position < input.count {
            let piece = next(position)
            var bytes = piece.text
            while previousIsSpace, bytes.first == 0x20 { bytes = bytes.dropFirst() }
            if !bytes.isEmpty {
                for byte in bytes { if byte == 0x20 { output += mark } else { output.append(byte) } }
                previousIsSpace = bytes.last == 0x20
            }
            position += piece.length
        }
        while output.count >= 3, Array(output.suffix(3)) == mark { output.removeLast(3) }
        return String(decoding: output, as: UTF8.self)
    }
}
