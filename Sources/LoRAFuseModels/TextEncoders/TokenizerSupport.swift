import Foundation
import LoRAFuse

/// Why a tokenizer could not be loaded: one line naming the file.
public struct TokenizerError: Error, Sendable, CustomStringConvertible, Equatable {
    public let path: String
    public let reason: String
    public init(path: String, reason: String) {
        self.path = path
        self.reason = reason
    }
    public var description: String { "\(path): \(reason)" }
}

/// What every tokenizer gives the encoders: ids with the model's special tokens, and the
/// fixed-length form the FLUX pipeline feeds its encoders.
public protocol TextTokenizer: Sendable {
    /// Ids with the special tokens the model expects, neither truncated nor padded.
    func encode(_ text: String) -> [Int]
    /// Ids truncated (keeping the special tokens) and padded to exactly `length`, as
    /// transformers' `tokenizer(text, padding="max_length", max_length=length, truncation=True)`.
    func encode(_ text: String, length: Int) -> [Int]
    /// The length FLUX pads to when nothing else is asked (CLIP: 77).
    var defaultLength: Int { get }
}

/// Reading the JSON files of tokenizer folders.
enum TokenizerFiles {
    static func json(_ url: URL) throws -> Any {
        let data = try InputFile.read(url.path) { TokenizerError(path: url.path, reason: "cannot read the file: \($0)") }
        do {
            return try JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed])
        } catch {
            throw TokenizerError(path: url.path, reason: "not valid JSON (\(error.localizedDescription))")
        }
    }

    /// A flat JSON object of string → integer (a BPE `vocab.json`), read straight from its
    /// bytes into a byte-keyed table: no String or Dictionary entry per token (Foundation's
    /// JSONSerialization took ~200 ms on CLIP's 49,408 entries, a [String: Int] ~40 ms).
    /// A key given twice keeps its last value, as Python's `json` does.
    static func vocabulary(_ url: URL) throws -> ByteKeyTable {
        func fail(_ reason: String) -> TokenizerError { TokenizerError(path: url.path, reason: reason) }
        let data = try InputFile.read(url.path) { fail("cannot read the file: \($0)") }
        return try data.withUnsafeBytes { raw -> ByteKeyTable in
            let bytes = raw.bindMemory(to: UInt8.self)
            var table = ByteKeyTable(capacity: bytes.count / 20)
            var index = 0
            func skipSpace() {
                while index < bytes.count, bytes[index] == 0x20 || bytes[index] == 0x0A || bytes[index] == 0x0D || bytes[index] == 0x09 { index += 1 }
            }
            func expect(_ byte: UInt8) throws {
                skipSpace()
                guard index < bytes.count, bytes[index] == byte else { throw fail("expected '\(Character(Unicode.Scalar(byte)))' at byte \(index)") }
                index += 1
            }
            func hex4() throws -> UInt32 {
                var value: UInt32 = 0
                guard index + 4 <= bytes.count else { throw fail("bad \\u escape at byte \(index)") }
                for byte in bytes[index..<index + 4] {
                    let digit: UInt8
                    switch byte {
                    case 0x30...0x39: digit = byte - 0x30
                    case 0x41...0x46: digit = byte - 0x41 + 10
                    case 0x61...0x66: digit = byte - 0x61 + 10
                    default: throw fail("bad \\u escape at byte \(index)")
                    }
                    value = value << 4 | UInt32(digit)
                }
                index += 4
                return value
            }
            var key: [UInt8] = []
            /// The next string's UTF-8 bytes into `key`; escapes decoded.
            func string() throws {
                try expect(0x22)
                key.removeAll(keepingCapacity: true)
                while true {
                    guard index < bytes.count else { throw fail("unterminated string") }
                    let byte = bytes[index]
                    index += 1
                    if byte == 0x22 { break }
                    guard byte == 0x5C else { key.append(byte); continue }
                    guard index < bytes.count else { throw fail("unterminated escape") }
                    let escaped = bytes[index]
                    index += 1
                    switch escaped {
                    case 0x6E: key.append(0x0A)
                    case 0x74: key.append(0x09)
                    case 0x72: key.append(0x0D)
                    case 0x62: key.append(0x08)
                    case 0x66: key.append(0x0C)
                    case 0x75:
                        var scalar = try hex4()
                        // A surrogate pair makes one scalar; a lone surrogate (Python's json
                        // allows them) becomes U+FFFD, and the escape after it is read on its own.
                        if (0xD800..<0xDC00).contains(scalar), index + 6 <= bytes.count, bytes[index] == 0x5C, bytes[index + 1] == 0x75 {
                            index += 2
                            let low = try hex4()
                            if (0xDC00..<0xE000).contains(low) {
                                scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                            } else {
                                index -= 6
                            }
                        }
                        key += Array(String(Unicode.Scalar(scalar).map(Character.init) ?? "\u{FFFD}").utf8)
                    default: key.append(escaped)  // \" \\ \/
                    }
                }
                guard key.withUnsafeBufferPointer(ByteKeyTable.isValidUTF8) else { throw fail("a key is not valid UTF-8") }
            }
            try expect(0x7B)
            skipSpace()
            if index < bytes.count, bytes[index] == 0x7D { return table }
            while true {
                try string()
                try expect(0x3A)
                skipSpace()
                guard index < bytes.count, bytes[index] != 0x2D else {
                    throw fail("the id of '\(String(decoding: key, as: UTF8.self))' is negative")
                }
                let start = index
                var value = 0
                while index < bytes.count, (0x30...0x39).contains(bytes[index]), index - start < 10 {
                    value = value * 10 + Int(bytes[index] - 0x30)
                    index += 1
                }
                guard index > start, index == bytes.count || !(0x30...0x39).contains(bytes[index]), value <= Int(Int32.max) else {
                    throw fail("the value of '\(String(decoding: key, as: UTF8.self))' is not an id (an integer in 0...\(Int32.max))")
                }
                key.withUnsafeBufferPointer { table.insert($0, value: value, replacing: true) }
                skipSpace()
                guard index < bytes.count else { throw fail("unterminated object") }
                if bytes[index] == 0x2C { index += 1; continue }
                try expect(0x7D)
                return table
            }
        }
    }

    /// `tokenizer_config.json` merged over `special_tokens_map.json`, where present; special
    /// tokens may be strings or `{"content": …}` objects.
    static func settings(_ folder: URL) throws -> [String: Any] {
        var merged: [String: Any] = [:]
        for name in ["special_tokens_map.json", "tokenizer_config.json"] {
            let url = folder.appendingPathComponent(name)
            guard FileManager.default.fileExists(atPath: url.path) else { continue }
            guard let object = try json(url) as? [String: Any] else {
                throw TokenizerError(path: url.path, reason: "expected a JSON object")
            }
            merged.merge(object) { _, new in new }
        }
        return merged
    }

    static func tokenText(_ value: Any?) -> String? {
        if let text = value as? String { return text }
        if let object = value as? [String: Any] { return object["content"] as? String }
        return nil
    }
}

/// A hash map from byte strings (UTF-8 tokens, BPE merge pairs) to integers, built in one
/// pass over a tokenizer file: every key lives in one byte arena and the slots are open
/// addressing with linear probing, so loading CLIP's 49,408 tokens and 48,894 merges costs
/// no allocation per entry.
struct ByteKeyTable: Sendable {
    private var arena: [UInt8] = []
    private var starts: [Int32] = [0]  // key i is arena[starts[i]..<starts[i + 1]]
    private(set) var values: [Int] = []
    private var slots: [Int32]  // entry index, or -1
    private var mask: Int

    init(capacity: Int = 64) {
        var size = 64
        while size * 3 < capacity * 4 { size <<= 1 }
        slots = [Int32](repeating: -1, count: size)
        mask = size - 1
        arena.reserveCapacity(capacity * 8)
        starts.reserveCapacity(capacity + 1)
        values.reserveCapacity(capacity)
    }

    var count: Int { values.count }

    /// Whether bytes are UTF-8: ASCII at once, anything else through the standard library
    /// (called on a concrete buffer, so no generic dispatch per key).
    static func isValidUTF8(_ bytes: UnsafeBufferPointer<UInt8>) -> Bool {
        if bytes.allSatisfy({ $0 < 0x80 }) { return true }
        return String(validating: bytes, as: UTF8.self) != nil
    }

    /// FNV-1a, 64-bit.
    private static func hash(_ key: UnsafeBufferPointer<UInt8>) -> Int {
        var hash: UInt64 = 0xCBF2_9CE4_8422_2325
        for byte in key { hash = (hash ^ UInt64(byte)) &* 0x0000_0100_0000_01B3 }
        return Int(truncatingIfNeeded: hash ^ (hash >> 29))
    }

    /// The slot holding `key`, or the empty slot where it would go.
    private func slot(_ key: UnsafeBufferPointer<UInt8>) -> (slot: Int, entry: Int?) {
        var slot = Self.hash(key) & mask
        return arena.withUnsafeBufferPointer { arena in
            while true {
                let entry = Int(slots[slot])
                if entry < 0 { return (slot, nil) }
                let start = Int(starts[entry]), end = Int(starts[entry + 1])
                if end - start == key.count, key.count == 0 || memcmp(arena.baseAddress! + start, key.baseAddress!, key.count) == 0 {
                    return (slot, entry)
                }
                slot = (slot + 1) & mask
            }
        }
    }

    /// Adds `key`; an existing key keeps its value unless `replacing`.
    mutating func insert(_ key: UnsafeBufferPointer<UInt8>, value: Int, replacing: Bool) {
        let (slot, entry) = slot(key)
        if let entry {
            if replacing { values[entry] = value }
            return
        }
        slots[slot] = Int32(values.count)
        arena.append(contentsOf: key)
        starts.append(Int32(arena.count))
        values.append(value)
        if values.count * 4 > slots.count * 3 { grow() }
    }

    private mutating func grow() {
        slots = [Int32](repeating: -1, count: slots.count * 2)
        mask = slots.count - 1
        arena.withUnsafeBufferPointer { arena in
            for entry in 0..<values.count {
                let start = Int(starts[entry])
                var slot = Self.hash(UnsafeBufferPointer(rebasing: arena[start..<Int(starts[entry + 1])])) & mask
                while slots[slot] >= 0 { slot = (slot + 1) & mask }
                slots[slot] = Int32(entry)
            }
        }
    }

    subscript(key: UnsafeBufferPointer<UInt8>) -> Int? {
        slot(key).entry.map { values[$0] }
    }

    subscript(key: [UInt8]) -> Int? {
        key.withUnsafeBufferPointer { self[$0] }
    }

    subscript(key: String) -> Int? {
        var key = key
        return key.withUTF8 { self[$0] }
    }
}

/// Character classes as Python's `unicodedata` and `str` methods define them, on scalars
/// (Python strings are sequences of code points, not grapheme clusters).
enum UnicodeClass {
    static func category(_ scalar: Unicode.Scalar) -> Unicode.GeneralCategory { scalar.properties.generalCategory }

    static func isLetter(_ scalar: Unicode.Scalar) -> Bool {
        switch category(scalar) {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter: true
        default: false
        }
    }

    static func isNumber(_ scalar: Unicode.Scalar) -> Bool {
        switch category(scalar) {
        case .decimalNumber, .letterNumber, .otherNumber: true
        default: false
        }
    }

    /// Any C* category (control, format, surrogate, private use, unassigned).
    static func isOther(_ scalar: Unicode.Scalar) -> Bool {
        switch category(scalar) {
        case .control, .format, .surrogate, .privateUse, .unassigned: true
        default: false
        }
    }

    /// Python's `str.isspace()`: bidirectional class WS, B or S, or category Zs.
    static func isPythonSpace(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar.value {
        case 0x09...0x0D, 0x1C...0x1F, 0x20, 0x85, 0xA0, 0x1680, 0x2000...0x200A, 0x2028, 0x2029, 0x202F, 0x205F, 0x3000: true
        default: category(scalar) == .spaceSeparator
        }
    }

    /// Python's `str.lower()`: full lowercase mappings, with Greek final sigma (Σ becomes ς
    /// after a cased letter and not before one, case-ignorable characters skipped).
    static func pythonLower(_ scalars: [Unicode.Scalar]) -> [Unicode.Scalar] {
        var output: [Unicode.Scalar] = []
        output.reserveCapacity(scalars.count)
        for (index, scalar) in scalars.enumerated() {
            if scalar.value == 0x03A3, isFinalSigma(scalars, at: index) {
                output.append(Unicode.Scalar(0x03C2)!)
            } else {
                output.append(contentsOf: scalar.properties.lowercaseMapping.unicodeScalars)
            }
        }
        return output
    }

    private static func isFinalSigma(_ scalars: [Unicode.Scalar], at index: Int) -> Bool {
        func casedNeighbour(_ range: some Sequence<Int>) -> Bool {
            for position in range {
                let properties = scalars[position].properties
                if properties.isCaseIgnorable { continue }
                return properties.isCased
            }
            return false
        }
        return casedNeighbour(stride(from: index - 1, through: 0, by: -1))
            && !casedNeighbour(index + 1..<scalars.count)
    }
}

/// Special tokens found in text before the model's own rules run (transformers' added
/// tokens): leftmost match, longest first; `lstrip`/`rstrip` tokens also take the
/// whitespace beside them.
struct AddedTokens: Sendable {
    struct Token: Sendable {
        let content: [Unicode.Scalar]
        let id: Int
        let stripLeft: Bool
        let stripRight: Bool
    }
    enum Piece: Equatable {
        case text([Unicode.Scalar])
        case token(Int)
    }

    private let byFirstScalar: [Unicode.Scalar: [Token]]

    init(_ tokens: [Token]) {
        var table: [Unicode.Scalar: [Token]] = [:]
        for token in tokens where !token.content.isEmpty { table[token.content[0], default: []].append(token) }
        byFirstScalar = table.mapValues { $0.sorted { $0.content.count > $1.content.count } }
    }

    func split(_ text: [Unicode.Scalar], isSpace: (Unicode.Scalar) -> Bool) -> [Piece] {
        var pieces: [Piece] = []
        var segment: [Unicode.Scalar] = []
        var index = 0
        while index < text.count {
            let match = byFirstScalar[text[index]]?.first { token in
                index + token.content.count <= text.count && Array(text[index..<index + token.content.count]) == token.content
            }
            guard let match else {
                segment.append(text[index])
                index += 1
                continue
            }
            if match.stripLeft { while let last = segment.last, isSpace(last) { segment.removeLast() } }
            if !segment.isEmpty { pieces.append(.text(segment)) }
            segment = []
            pieces.append(.token(match.id))
            index += match.content.count
            if match.stripRight { while index < text.count, isSpace(text[index]) { index += 1 } }
        }
        if !segment.isEmpty { pieces.append(.text(segment)) }
        return pieces
    }
}

extension Array where Element == Int {
    /// Keeps `prefix` + the first ids that fit + `suffix` within `length`, then pads.
    func framed(prefix: [Int], suffix: [Int], length: Int, padding: Int) -> [Int] {
        let room = Swift.max(0, length - prefix.count - suffix.count)
        var ids = prefix + self.prefix(room) + suffix
        if ids.count > length { ids = Array(ids.prefix(length)) }
        return ids + [Int](repeating: padding, count: length - ids.count)
    }
}
