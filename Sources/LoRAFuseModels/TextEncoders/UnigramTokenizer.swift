import Foundation
import LoRAFuse

/// A SentencePiece unigram tokenizer (T5's), token for token as Hugging Face tokenizers
/// runs it from a `tokenizer.json` (transformers' `T5TokenizerFast`, which FluxPipeline
/// loads): added tokens split out, then normalizers (SentencePiece's precompiled map,
/// strip, replace, NFKC/NFC, lower-case), `Metaspace` / `WhitespaceSplit` pre-tokenizers,
/// the best-scoring segmentation of each piece (characters no piece covers become `<unk>`,
/// consecutive ones fused), then the template's special tokens (T5: `</s>`).
/// A folder with only `spiece.model` is read as transformers converts it.
public struct UnigramTokenizer: TextTokenizer {
    enum Normalizer: Sendable {
        case precompiled(PrecompiledCharsmap)
        case strip(left: Bool, right: Bool)
        case replaceLiteral(pattern: String, content: String)
        /// Compiled once when the tokenizer is read (nil when the pattern does not compile: left as is).
        case replaceRegex(CompiledPattern, content: String)
        case nfkc, nfc, lowercase
        /// SentencePiece's whole normalisation, whitespace and `▁` included (a lone spiece.model).
        case sentencePiece(PrecompiledCharsmap?, addDummyPrefix: Bool)
    }
    enum PrependScheme: String, Sendable { case always, first, never }
    enum PreTokenizer: Sendable {
        case metaspace(replacement: Character, prepend: PrependScheme, split: Bool)
        case whitespaceSplit
    }

    public let pieces: [(piece: String, score: Double)]
    public let unknown: Int
    public let pad: Int
    public let defaultLength: Int
    let normalizers: [Normalizer]
    let preTokenizers: [PreTokenizer]
    let prefix: [Int]
    let suffix: [Int]
    /// transformers' slow `T5Tokenizer` adds no `</s>` after text that already ends with one.
    let skipsRepeatedSuffix: Bool
    private let added: AddedTokens
    private let ids: [[UInt8]: Int]
    private let longestPiece: Int
    private let unknownScore: Double

    init(pieces: [(String, Double)], unknown: Int, pad: Int, normalizers: [Normalizer], preTokenizers: [PreTokenizer],
         prefix: [Int], suffix: [Int], skipsRepeatedSuffix: Bool = false, added: [AddedTokens.Token], defaultLength: Int) {
        self.pieces = pieces.map { (piece: $0.0, score: $0.1) }
        self.unknown = unknown
        self.pad = pad
        self.normalizers = normalizers
        self.preTokenizers = preTokenizers
        self.prefix = prefix
        self.suffix = suffix
        self.skipsRepeatedSuffix = skipsRepeatedSuffix
        self.added = AddedTokens(added)
        self.defaultLength = defaultLength
        var ids: [[UInt8]: Int] = [:]
        for (id, piece) in pieces.enumerated() where ids[Array(piece.0.utf8)] == nil { ids[Array(piece.0.utf8)] = id }
        self.ids = ids
        longestPiece = pieces.map { $0.0.utf8.count }.max() ?? 1
        unknownScore = (pieces.map(\.1).min() ?? 0) - 10
    }

    /// Loads `tokenizer.json` from a folder (or the file itself), else `spiece.model`.
    public static func load(_ path: String) throws -> UnigramTokenizer {
        var root = URL(fileURLWithPath: path)
        var isFolder: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isFolder) else {
            throw TokenizerError(path: path, reason: "no such file or folder")
        }
        if !isFolder.boolValue {
            let file = root
            root = root.deletingLastPathComponent()
            return file.pathExtension == "model" ? try fromSentencePiece(file, folder: root) : try fromTokenizerJSON(file, folder: root)
        }
        let json = root.appendingPathComponent("tokenizer.json")
        if FileManager.default.fileExists(atPath: json.path) { return try fromTokenizerJSON(json, folder: root) }
        let model = root.appendingPathComponent("spiece.model")
        if FileManager.default.fileExists(atPath: model.path) { return try fromSentencePiece(model, folder: root) }
        throw TokenizerError(path: path, reason: "no tokenizer.json or spiece.model")
    }

    /// The ids of `text` followed by the end token.
    public func encode(_ text: String) -> [Int] {
        let ids = tokens(text)
        return prefix + ids + suffix(after: ids)
    }

    /// The ids of `text`, truncated or padded to `length`.
    public func encode(_ text: String, length: Int) -> [Int] {
        let ids = tokens(text)
        return ids.framed(prefix: prefix, suffix: suffix(after: ids), length: length, padding: pad)
    }

    private func suffix(after ids: [Int]) -> [Int] {
        skipsRepeatedSuffix && !suffix.isEmpty && ids.suffix(suffix.count).elementsEqual(suffix) ? [] : suffix
    }

    /// Ids of the text alone, without the template's special tokens.
    public func tokens(_ text: String) -> [Int] {
        var result: [Int] = []
        var atStart = true
        for piece in added.split(Array(text.unicodeScalars), isSpace: { $0.properties.isWhitespace }) {
            switch piece {
            case let .token(id):
                result.append(id)
            case let .text(scalars):
                let normalized = normalizers.reduce(String(String.UnicodeScalarView(scalars))) { Self.apply($1, to: $0) }
                for word in preTokenize(normalized, atStart: atStart) { result.append(contentsOf: segment(Array(word.utf8))) }
            }
            atStart = false
        }
        return result
    }

    static func apply(_ normalizer: Normalizer, to text: String) -> String {
        switch normalizer {
        case let .precompiled(map): return map.normalize(text)
        case let .strip(left, right):
            var scalars = Substring(text).unicodeScalars[...]
            if left { while let first = scalars.first, first.properties.isWhitespace { scalars.removeFirst() } }
            if right { while let last = scalars.last, last.properties.isWhitespace { scalars.removeLast() } }
            return String(String.UnicodeScalarView(scalars))
        case let .replaceLiteral(pattern, content):
            return Self.replaceLiteral(pattern, with: content, in: text)
        case let .replaceRegex(compiled, content):
            guard let regex = compiled.regex else { return text }
            let template = NSRegularExpression.escapedTemplate(for: content)
            return regex.stringByReplacingMatches(in: text, range: NSRange(text.startIndex..., in: text), withTemplate: template)
        case .nfkc: return text.precomposedStringWithCompatibilityMapping
        case .nfc: return text.precomposedStringWithCanonicalMapping
        case .lowercase: return text.lowercased()
        case let .sentencePiece(map, addDummyPrefix):
            return PrecompiledCharsmap.sentencePieceNormalize(text, map: map, addDummyPrefix: addDummyPrefix)
        }
    }

    /// Pre-tokenizers on Unicode scalars, as Hugging Face tokenizers runs them on `char`s
    /// (Swift's `Character` would glue a space to a combining mark that follows it).
    /// Every occurrence of `pattern` replaced, comparing Unicode scalars (not graphemes).
    static func replaceLiteral(_ pattern: String, with content: String, in text: String) -> String {
        let needle = Array(pattern.unicodeScalars), scalars = Array(text.unicodeScalars)
        guard !needle.isEmpty else { return text }
        var output = String.UnicodeScalarView()
        var index = 0
        while index < scalars.count {
            if index + needle.count <= scalars.count, Array(scalars[index..<index + needle.count]) == needle {
                output.append(contentsOf: content.unicodeScalars)
                index += needle.count
            } else {
                output.append(scalars[index])
                index += 1
            }
        }
        return String(output)
    }

    func preTokenize(_ text: String, atStart: Bool) -> [String] {
        var words = [Array(text.unicodeScalars)]
        for step in preTokenizers {
            switch step {
            case .whitespaceSplit:
                words = words.flatMap { $0.split(whereSeparator: { $0.properties.isWhitespace }).map(Array.init) }
            case let .metaspace(replacement, prepend, split):
                let mark = replacement.unicodeScalars.first!
                words = words.flatMap { word -> [[Unicode.Scalar]] in
                    guard !word.isEmpty else { return [] }
                    var replaced = word.map { $0 == " " ? mark : $0 }
                    let shouldPrepend = prepend == .always || (prepend == .first && atStart)
                    if shouldPrepend, replaced.first != mark { replaced.insert(mark, at: 0) }
                    guard split else { return [replaced] }
                    // Each replacement character starts a new piece (merged with what follows).
                    var pieces: [[Unicode.Scalar]] = []
                    var current: [Unicode.Scalar] = []
                    for scalar in replaced {
                        if scalar == mark, !current.isEmpty {
                            pieces.append(current)
                            current = []
                        }
                        current.append(scalar)
                    }
                    if !current.isEmpty { pieces.append(current) }
                    return pieces
                }
            }
        }
        return words.filter { !$0.isEmpty }.map { String(String.UnicodeScalarView($0)) }
    }

    /// The best-scoring segmentation (tokenizers' `encode_optimized`): a forward pass over
    /// character boundaries, ties kept by the first candidate; `<unk>` for a character no
    /// piece of its own length covers, consecutive unknowns fused into one.
    func segment(_ bytes: [UInt8]) -> [Int] {
        let size = bytes.count
        guard size > 0 else { return [] }
        var score = [Double](repeating: 0, count: size + 1)
        var start = [Int](repeating: -1, count: size + 1)
        var token = [Int](repeating: unknown, count: size + 1)
        func characterLength(_ at: Int) -> Int {
            let lead = bytes[at]
            let length = lead < 0x80 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4
            return min(length, size - at)
        }
        var position = 0
        while position < size {
            let here = score[position]
            let first = characterLength(position)
            var coversOneCharacter = false
            var end = position
            while end < size, end - position < longestPiece {
                end += characterLength(end)
                guard end - position <= longestPiece, let id = ids[Array(bytes[position..<end])] else { continue }
                let candidate = here + pieces[id].score
                if start[end] < 0 || candidate > score[end] {
                    score[end] = candidate
                    start[end] = position
                    token[end] = id
                }
                if end - position == first { coversOneCharacter = true }
            }
            if !coversOneCharacter {
                let candidate = here + unknownScore
                if start[position + first] < 0 || candidate > score[position + first] {
                    score[position + first] = candidate
                    start[position + first] = position
                    token[position + first] = unknown
                }
            }
            position += first
        }
        var result: [Int] = []
        var end = size
        var previousWasUnknown = false
        while end > 0 {
            let id = token[end]
            if id == unknown {
                if !previousWasUnknown { result.append(unknown) }
                previousWasUnknown = true
            } else {
                result.append(id)
                previousWasUnknown = false
            }
            end = start[end]
        }
        return result.reversed()
    }
}

extension UnigramTokenizer {
    /// A bound on added and extra tokens beyond the pieces (T5: 100 extra ids).
    static let maximumAddedTokens = 65536

    /// Hugging Face's `tokenizer.json` with a Unigram model.
    static func fromTokenizerJSON(_ url: URL, folder: URL) throws -> UnigramTokenizer {
        func fail(_ reason: String) -> TokenizerError { TokenizerError(path: url.path, reason: reason) }
        guard let root = try TokenizerFiles.json(url) as? [String: Any], let model = root["model"] as? [String: Any] else {
            throw fail("expected an object with a 'model'")
        }
        guard model["type"] as? String == "Unigram" else {
            throw fail("the model is \(model["type"] as? String ?? "of no type"); only Unigram (SentencePiece) is read here")
        }
        guard let vocab = model["vocab"] as? [[Any]], !vocab.isEmpty else { throw fail("the Unigram model has no vocab") }
        var pieces: [(String, Double)] = []
        for (index, entry) in vocab.enumerated() {
            guard entry.count == 2, let piece = entry[0] as? String, let score = (entry[1] as? NSNumber)?.doubleValue else {
                throw fail("vocab entry \(index) is not [piece, score]")
            }
            pieces.append((piece, score))
        }
        if model["byte_fallback"] as? Bool == true { throw fail("byte_fallback is not supported") }
        guard let unknown = model["unk_id"] as? Int, unknown >= 0, unknown < pieces.count else {
            throw fail("the Unigram model has no valid unk_id")
        }
        let normalizers = try parseNormalizer(root["normalizer"], fail: fail)
        let preTokenizers = try parsePreTokenizer(root["pre_tokenizer"], fail: fail)
        var added: [AddedTokens.Token] = []
        for entry in root["added_tokens"] as? [[String: Any]] ?? [] {
            guard let content = entry["content"] as? String, let id = entry["id"] as? Int else { throw fail("an added token has no content or id") }
            // Added tokens extend the vocabulary by a few entries, never by millions.
            guard (0...(pieces.count + Self.maximumAddedTokens)).contains(id) else {
                throw fail("added token \(jsonQuoted(String(content.prefix(40)))) has id \(id), outside 0...\(pieces.count + Self.maximumAddedTokens)")
            }
            added.append(.init(content: Array(content.unicodeScalars), id: id,
                               stripLeft: entry["lstrip"] as? Bool ?? false, stripRight: entry["rstrip"] as? Bool ?? false))
            while pieces.count <= id { pieces.append(("", 0)) }
            if pieces[id].0.isEmpty { pieces[id] = (content, 0) }
        }
        // The post-processor's template around the sequence ($A).
        var prefix: [Int] = [], suffix: [Int] = []
        if let post = root["post_processor"] as? [String: Any], post["type"] as? String == "TemplateProcessing",
           let single = post["single"] as? [[String: Any]] {
            let specials = post["special_tokens"] as? [String: [String: Any]] ?? [:]
            var seenSequence = false
            for item in single {
                if item["Sequence"] != nil { seenSequence = true; continue }
                guard let special = item["SpecialToken"] as? [String: Any], let name = special["id"] as? String,
                      let ids = specials[name]?["ids"] as? [Int] else { throw fail("cannot read the post-processor template") }
                if seenSequence { suffix += ids } else { prefix += ids }
            }
        } else if root["post_processor"] is NSNull || root["post_processor"] == nil {
            // no special tokens
        } else {
            throw fail("post-processor \((root["post_processor"] as? [String: Any])?["type"] as? String ?? "?") is not supported")
        }
        let settings = try TokenizerFiles.settings(folder)
        let padText = TokenizerFiles.tokenText(settings["pad_token"]) ?? "<pad>"
        let pad = pieces.firstIndex { $0.0 == padText } ?? 0
        let maxLength = settings["model_max_length"] as? Int ?? 512
        return UnigramTokenizer(pieces: pieces, unknown: unknown, pad: pad, normalizers: normalizers, preTokenizers: preTokenizers,
                                prefix: prefix, suffix: suffix, added: added,
                                defaultLength: maxLength > 0 && maxLength < 1_000_000 ? maxLength : 512)
    }

    static func parseNormalizer(_ value: Any?, fail: (String) -> TokenizerError) throws -> [Normalizer] {
        guard let object = value as? [String: Any] else { return [] }
        switch object["type"] as? String {
        case "Sequence":
            return try (object["normalizers"] as? [Any] ?? []).flatMap { try parseNormalizer($0, fail: fail) }
        case "Precompiled":
            guard let text = object["precompiled_charsmap"] as? String, let data = Data(base64Encoded: text) else {
                return []
            }
            return [.precompiled(try PrecompiledCharsmap([UInt8](data)))]
        case "Strip":
            return [.strip(left: object["strip_left"] as? Bool ?? false, right: object["strip_right"] as? Bool ?? false)]
        case "Replace":
            let pattern = object["pattern"] as? [String: Any]
            let content = object["content"] as? String ?? ""
            if let regex = pattern?["Regex"] as? String { return [.replaceRegex(CompiledPattern(regex), content: content)] }
            if let literal = pattern?["String"] as? String { return [.replaceLiteral(pattern: literal, content: content)] }
            throw fail("a Replace normalizer without a pattern")
        case "NFKC": return [.nfkc]
        case "NFC": return [.nfc]
        case "Lowercase": return [.lowercase]
        case let other: throw fail("normalizer \(other ?? "without a type") is not supported")
        }
    }

    static func parsePreTokenizer(_ value: Any?, fail: (String) -> TokenizerError) throws -> [PreTokenizer] {
        guard let object = value as? [String: Any] else { return [] }
        switch object["type"] as? String {
        case "Sequence":
            return try (object["pretokenizers"] as? [Any] ?? []).flatMap { try parsePreTokenizer($0, fail: fail) }
        case "WhitespaceSplit":
            return [.whitespaceSplit]
        case "Metaspace":
            let replacement = (object["replacement"] as? String)?.first ?? "▁"
            let scheme: PrependScheme
            if let name = object["prepend_scheme"] as? String {
                guard let parsed = PrependScheme(rawValue: name) else { throw fail("unknown Metaspace prepend_scheme '\(name)'") }
                scheme = parsed
            } else {
                scheme = object["add_prefix_space"] as? Bool ?? true ? .always : .never
            }
            return [.metaspace(replacement: replacement, prepend: scheme, split: object["split"] as? Bool ?? true)]
        case let other: throw fail("pre-tokenizer \(other ?? "without a type") is not supported")
        }
    }

    /// A SentencePiece `spiece.model` (protobuf), read as transformers' slow `T5Tokenizer`
    /// (legacy) runs it: added tokens split out, SentencePiece's own normaliser on each
    /// segment, T5's `<extra_id_N>` tokens after the pieces, `</s>` at the end unless the
    /// text already ends with it.
    static func fromSentencePiece(_ url: URL, folder: URL) throws -> UnigramTokenizer {
        func fail(_ reason: String) -> TokenizerError { TokenizerError(path: url.path, reason: reason) }
        let data = try InputFile.read(url.path) { fail("cannot read the file: \($0)") }
        let model = try SentencePieceModel(bytes: [UInt8](data), path: url.path)
        var pieces = model.pieces.map { ($0.piece, Double($0.score)) }
        guard let unknown = model.pieces.firstIndex(where: { $0.type == 2 }) else { throw fail("no <unk> piece") }
        let settings = try TokenizerFiles.settings(folder)
        var added = model.pieces.enumerated().filter { $0.element.type == 3 || $0.element.type == 4 }.map {
            AddedTokens.Token(content: Array($0.element.piece.unicodeScalars), id: $0.offset, stripLeft: false, stripRight: false)
        }
        added.append(.init(content: Array(model.pieces[unknown].piece.unicodeScalars), id: unknown, stripLeft: false, stripRight: false))
        let extraIds = settings["extra_ids"] as? Int ?? 100
        guard (0...Self.maximumAddedTokens).contains(extraIds) else {
            throw TokenizerError(path: folder.appendingPathComponent("tokenizer_config.json").path,
                                 reason: "extra_ids is \(extraIds); expected 0...\(Self.maximumAddedTokens) (T5 has 100)")
        }
        for index in stride(from: extraIds - 1, through: 0, by: -1) {
            added.append(.init(content: Array("<extra_id_\(index)>".unicodeScalars), id: pieces.count, stripLeft: true, stripRight: true))
            pieces.append(("<extra_id_\(index)>", 0))
        }
        let map = model.precompiledCharsmap.isEmpty ? nil : try PrecompiledCharsmap(model.precompiledCharsmap)
        let eosText = TokenizerFiles.tokenText(settings["eos_token"]) ?? "</s>"
        guard let eos = pieces.firstIndex(where: { $0.0 == eosText }) else { throw fail("no end-of-sequence piece '\(eosText)'") }
        let padText = TokenizerFiles.tokenText(settings["pad_token"]) ?? "<pad>"
        let maxLength = settings["model_max_length"] as? Int ?? 512
        return UnigramTokenizer(pieces: pieces, unknown: unknown, pad: pieces.firstIndex { $0.0 == padText } ?? 0,
                                normalizers: [.sentencePiece(map, addDummyPrefix: model.addDummyPrefix)], preTokenizers: [],
                                prefix: [], suffix: [eos], skipsRepeatedSuffix: true, added: added,
                                defaultLength: maxLength > 0 && maxLength < 1_000_000 ? maxLength : 512)
    }
}

/// The parts of SentencePiece's `ModelProto` a unigram tokenizer needs, read from the
/// protobuf wire format.
struct SentencePieceModel {
    struct Piece { var piece = ""; var score: Float = 0; var type = 1 }
    var pieces: [Piece] = []
    var precompiledCharsmap: [UInt8] = []
    var addDummyPrefix = true

    init(bytes: [UInt8], path: String) throws {
        var reader = ProtobufReader(bytes: bytes[...], path: path)
        while let (field, value) = try reader.next() {
            switch (field, value) {
            case let (1, .bytes(message)):
                var piece = Piece()
                var inner = ProtobufReader(bytes: message, path: path)
                while let (innerField, innerValue) = try inner.next() {
                    switch (innerField, innerValue) {
                    case let (1, .bytes(text)): piece.piece = String(decoding: text, as: UTF8.self)
                    case let (2, .fixed32(bits)): piece.score = Float(bitPattern: bits)
                    case let (3, .varint(type)): piece.type = type <= 6 ? Int(type) : 0  // 0: not a type SentencePiece defines
                    default: break
                    }
                }
                pieces.append(piece)
            case let (3, .bytes(message)):
                var inner = ProtobufReader(bytes: message, path: path)
                while let (innerField, innerValue) = try inner.next() {
                    switch (innerField, innerValue) {
                    case let (2, .bytes(blob)): precompiledCharsmap = Array(blob)
                    case let (3, .varint(flag)): addDummyPrefix = flag != 0
                    default: break
                    }
                }
            default: break
            }
        }
        guard !pieces.isEmpty else { throw TokenizerError(path: path, reason: "no pieces (not a SentencePiece model)") }
    }
}

struct ProtobufReader {
    enum Value { case varint(UInt64), fixed64(UInt64), bytes(ArraySlice<UInt8>), fixed32(UInt32) }
    var bytes: ArraySlice<UInt8>
    let path: String

    mutating func varint() throws -> UInt64 {
        var result: UInt64 = 0
        var shift: UInt64 = 0
        while true {
            guard let byte = bytes.popFirst(), shift < 64 else {
                throw TokenizerError(path: path, reason: "truncated or malformed protobuf")
            }
            result |= UInt64(byte & 0x7F) << shift
            if byte & 0x80 == 0 { return result }
            shift += 7
        }
    }

    mutating func take(_ count: Int) throws -> ArraySlice<UInt8> {
        guard count >= 0, count <= bytes.count else { throw TokenizerError(path: path, reason: "truncated protobuf") }
        let part = bytes.prefix(count)
        bytes = bytes.dropFirst(count)
        return part
    }

    mutating func next() throws -> (Int, Value)? {
        guard !bytes.isEmpty else { return nil }
        let key = try varint()
        let field = Int(key >> 3)
        switch key & 7 {
        case 0: return (field, .varint(try varint()))
        case 1: return (field, .fixed64(try take(8).reversed().reduce(0) { $0 << 8 | UInt64($1) }))
        case 2:
            let length = try varint()
            guard length <= UInt64(bytes.count) else { throw TokenizerError(path: path, reason: "truncated protobuf") }
            return (field, .bytes(try take(Int(length))))
        case 5: return (field, .fixed32(try take(4).reversed().reduce(0) { $0 << 8 | UInt32($1) }))
        default: throw TokenizerError(path: path, reason: "unsupported protobuf wire type \(key & 7)")
        }
    }
}

/// A regular expression compiled once (NSRegularExpression is immutable and thread-safe).
final class CompiledPattern: @unchecked Sendable {
    let regex: NSRegularExpression?
    init(_ pattern: String) { regex = try? NSRegularExpression(pattern: pattern) }
}
