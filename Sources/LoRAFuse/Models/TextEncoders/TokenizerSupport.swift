import Foundation

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
        guard let data = FileManager.default.contents(atPath: url.path) else {
            throw TokenizerError(path: url.path, reason: "cannot read the file")
        }
        do {
            return try JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed])
        } catch {
            throw TokenizerError(path: url.path, reason: "not valid JSON (\(error.localizedDescription))")
        }
    }

    /// A flat JSON object of string → integer (a BPE `vocab.json`), read straight from its
    /// bytes: Foundation's JSONSerialization takes ~200 ms on CLIP's 49,408 entries.
    static func vocabulary(_ url: URL) throws -> [String: Int] {
        func fail(_ reason: String) -> TokenizerError { TokenizerError(path: url.path, reason: reason) }
        guard let data = FileManager.default.contents(atPath: url.path) else { throw fail("cannot read the file") }
        return try data.withUnsafeBytes { raw -> [String: Int] in
            let bytes = raw.bindMemory(to: UInt8.self)
            var index = 0
            func skipSpace() { while index < bytes.count, [0x20, 0x0A, 0x0D, 0x09].contains(bytes[index]) { index += 1 } }
            func expect(_ byte: UInt8) throws {
                skipSpace()
                guard index < bytes.count, bytes[index] == byte else { throw fail("expected '\(Character(Unicode.Scalar(byte)))' at byte \(index)") }
                index += 1
            }
            func hex4() throws -> UInt32 {
                guard index + 4 <= bytes.count, let value = UInt32(String(decoding: bytes[index..<index + 4], as: UTF8.self), radix: 16) else {
                    throw fail("bad \\u escape at byte \(index)")
                }
                index += 4
                return value
            }
            func string() throws -> String {
                try expect(0x22)
                var utf8: [UInt8] = []
                while true {
                    guard index < bytes.count else { throw fail("unterminated string") }
                    let byte = bytes[index]
                    index += 1
                    if byte == 0x22 { break }
                    guard byte == 0x5C else { utf8.append(byte); continue }
                    guard index < bytes.count else { throw fail("unterminated escape") }
                    let escaped = bytes[index]
                    index += 1
                    switch escaped {
                    case 0x6E: utf8.append(0x0A)
                    case 0x74: utf8.append(0x09)
                    case 0x72: utf8.append(0x0D)
                    case 0x62: utf8.append(0x08)
                    case 0x66: utf8.append(0x0C)
                    case 0x75:
                        var scalar = try hex4()
                        if (0xD800..<0xDC00).contains(scalar), index + 6 <= bytes.count, bytes[index] == 0x5C, bytes[index + 1] == 0x75 {
                            index += 2
                            let low = try hex4()
                            scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                        }
                        utf8 += Array(String(Unicode.Scalar(scalar).map(Character.init) ?? "\u{FFFD}").utf8)
                    default: utf8.append(escaped)  // \" \\ \/
                    }
                }
                guard let text = String(validating: utf8, as: UTF8.self) else { throw fail("a key is not valid UTF-8") }
                return text
            }
            var vocabulary: [String: Int] = [:]
            try expect(0x7B)
            skipSpace()
            if index < bytes.count, bytes[index] == 0x7D { return vocabulary }
            while true {
                let key = try string()
                try expect(0x3A)
                skipSpace()
                let start = index
                if index < bytes.count, bytes[index] == 0x2D { index += 1 }
                while index < bytes.count, (0x30...0x39).contains(bytes[index]) { index += 1 }
                guard index > start, let value = Int(String(decoding: bytes[start..<index], as: UTF8.self)) else {
                    throw fail("the value of '\(key)' is not an integer")
                }
                vocabulary[key] = value
                skipSpace()
                guard index < bytes.count else { throw fail("unterminated object") }
                if bytes[index] == 0x2C { index += 1; continue }
                try expect(0x7D)
                return vocabulary
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
