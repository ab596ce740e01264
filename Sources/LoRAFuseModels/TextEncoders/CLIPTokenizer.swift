import Foundation
import LoRAFuse

/// Whose CLIP tokenization to reproduce. The two differ on CJK text, format characters
/// (U+200D in emoji sequences), controls and a few case mappings; FLUX's text encoders see
/// different ids, so a reference made with one does not match the other.
public enum CLIPTokenizerRules: String, Sendable, CaseIterable {
    /// transformers 5's `CLIPTokenizer`, which runs the tokenizers backend (`tokenizer.json`):
    /// NFC, every whitespace run to one space, per-character lower case, CLIP's word pattern
    /// (case-sensitive), byte-level BPE. The default.
    case transformers5
    /// transformers 4's slow `CLIPTokenizer` without ftfy: BERT's BasicTokenizer cleans the
    /// text first (NUL, U+FFFD, controls and format characters dropped, spaces put around CJK
    /// ideographs), then NFC, Python's `str.lower()`, the word pattern case-insensitively.
    case transformers4
}

/// CLIP's byte-level BPE tokenizer, token for token as transformers' `CLIPTokenizer` (the
/// one diffusers' FluxPipeline loads), by the rules of transformers 5 or 4
/// (`CLIPTokenizerRules`): special tokens split out; the text normalised; CLIP's word
/// pattern; UTF-8 bytes mapped to printable characters; BPE merges by rank with `</w>`
/// ending each word.
public struct CLIPTokenizer: TextTokenizer {
    public let bos: Int
    public let eos: Int
    public let pad: Int
    public let unknown: Int
    public let defaultLength: Int
    public let rules: CLIPTokenizerRules
    private let vocabulary: ByteKeyTable
    private let ranks: ByteKeyTable
    private let added: AddedTokens
    /// Each byte's printable character (GPT-2's map), as UTF-8.
    private let byteSymbols: [[UInt8]]

    /// The number of tokens in the vocabulary, and the largest id.
    public var vocabularySize: Int { vocabulary.count }
    public var largestID: Int { vocabulary.values.max() ?? -1 }

    /// The id of one vocabulary entry.
    public func id(of token: String) -> Int? { vocabulary[token] }

    /// Loads a tokenizer folder: `vocab.json` + `merges.txt` (as transformers 4 and the FLUX
    /// repositories keep them) or, without those, `tokenizer.json` (all transformers 5 writes);
    /// and, when present, `tokenizer_config.json` / `special_tokens_map.json`.
    public init(folder: String, rules: CLIPTokenizerRules = .transformers5) throws {
        let root = URL(fileURLWithPath: folder)
        var vocabURL = root.appendingPathComponent("vocab.json")
        let mergesURL = root.appendingPathComponent("merges.txt")
        let manager = FileManager.default
        let vocabulary: ByteKeyTable, ranks: ByteKeyTable
        if manager.fileExists(atPath: vocabURL.path) || !manager.fileExists(atPath: root.appendingPathComponent("tokenizer.json").path) {
            // The two tables are built at once, one per core (~10 ms each).
            let merges = Pending { try Self.mergeRanks(mergesURL) }
            // Joined even when the vocabulary fails: no work outlives the error.
            let parsed = Result { try TokenizerFiles.vocabulary(vocabURL) }
            let merged = Result { try merges.value() }
            vocabulary = try parsed.get()
            ranks = try merged.get()
        } else {
            vocabURL = root.appendingPathComponent("tokenizer.json")
            (vocabulary, ranks) = try Self.bytePairModel(vocabURL)
        }
        guard vocabulary.count > 0 else { throw TokenizerError(path: vocabURL.path, reason: "expected an object of token → id") }
        self.rules = rules
        let settings = try TokenizerFiles.settings(root)
        // The special tokens (text from the settings, else CLIP's) are matched whole in any text.
        var specials: [String: Int] = [:]
        func id(_ key: String, _ fallback: String) throws -> Int {
            let text = TokenizerFiles.tokenText(settings[key]) ?? fallback
            guard let id = vocabulary[text] else {
                throw TokenizerError(path: vocabURL.path, reason: "the \(key) '\(text)' is not in the vocabulary")
            }
            specials[text] = id
            return id
        }
        self.vocabulary = vocabulary
        self.ranks = ranks
        bos = try id("bos_token", "<|startoftext|>")
        eos = try id("eos_token", "<|endoftext|>")
        pad = try id("pad_token", "<|endoftext|>")
        unknown = try id("unk_token", "<|endoftext|>")
        let maxLength = settings["model_max_length"] as? Int ?? 77
        defaultLength = maxLength > 0 && maxLength < 1_000_000 ? maxLength : 77
        added = AddedTokens(specials.map {
            AddedTokens.Token(content: Array($0.key.unicodeScalars), id: $0.value, stripLeft: false, stripRight: false)
        })
        byteSymbols = Self.byteToCharacter().map { Array(String($0).utf8) }
    }

    /// `merges.txt` as pair → rank. As transformers: the first line is a version header, and
    /// CLIP uses at most 49152 − 256 − 2 merges. Each line is "first second", its own key.
    static func mergeRanks(_ url: URL) throws -> ByteKeyTable {
        let data = try InputFile.read(url.path) { TokenizerError(path: url.path, reason: "cannot read the merges: \($0)") }
        var ranks = ByteKeyTable(capacity: 49152 * 3 / 4)
        try data.withUnsafeBytes { raw in
            let bytes = raw.bindMemory(to: UInt8.self)
            var start = 0, line = 0
            while start < bytes.count, ranks.count < 49152 - 256 - 2 {
                var end = start
                while end < bytes.count, bytes[end] != 0x0A { end += 1 }
                var stop = end
                while stop > start, bytes[stop - 1] == 0x0D || bytes[stop - 1] == 0x20 { stop -= 1 }
                if line > 0, stop > start {
                    let text = UnsafeBufferPointer(rebasing: bytes[start..<stop])
                    guard text.reduce(0, { $0 + ($1 == 0x20 ? 1 : 0) }) == 1, text.first != 0x20, ByteKeyTable.isValidUTF8(text) else {
                        throw TokenizerError(path: url.path, reason: "line \(line + 1) is not two symbols: '\(String(decoding: text, as: UTF8.self))'")
                    }
                    ranks.insert(text, value: ranks.count, replacing: false)
                }
                line += 1
                start = end + 1
            }
        }
        return ranks
    }

    /// Whether `folder` holds a CLIP (byte-level BPE) tokenizer: `merges.txt`, or a
    /// `tokenizer.json` whose model is BPE (T5's is Unigram).
    public static func recognizes(folder: String) -> Bool {
        let root = URL(fileURLWithPath: folder)
        if FileManager.default.fileExists(atPath: root.appendingPathComponent("merges.txt").path) { return true }
        guard let object = try? TokenizerFiles.json(root.appendingPathComponent("tokenizer.json")) as? [String: Any],
              let model = object["model"] as? [String: Any] else { return false }
        return model["type"] as? String == "BPE"
    }

    /// The BPE model of a tokenizers `tokenizer.json`: `model.vocab` (token → id) and
    /// `model.merges` (`["a", "b"]` pairs, or `"a b"` strings in older files), by rank.
    static func bytePairModel(_ url: URL) throws -> (vocabulary: ByteKeyTable, ranks: ByteKeyTable) {
        func fail(_ reason: String) -> TokenizerError { TokenizerError(path: url.path, reason: reason) }
        guard let object = try TokenizerFiles.json(url) as? [String: Any], let model = object["model"] as? [String: Any] else {
            throw fail("expected a tokenizers file with a \"model\" object")
        }
        guard model["type"] as? String == "BPE" else {
            throw fail("model type is \(model["type"].map { "\($0)" } ?? "missing"), expected BPE (not a CLIP tokenizer)")
        }
        guard let entries = model["vocab"] as? [String: Any], let merges = model["merges"] as? [Any] else {
            throw fail("the BPE model needs a vocab object and a merges list")
        }
        var vocabulary = ByteKeyTable(capacity: entries.count)
        for (token, value) in entries {
            guard let number = value as? NSNumber, let id = Int(exactly: number.doubleValue), id >= 0, id <= Int(Int32.max) else {
                throw fail("vocab entry '\(token)' has no valid id")
            }
            var key = token
            key.withUTF8 { vocabulary.insert($0, value: id, replacing: true) }
        }
        var ranks = ByteKeyTable(capacity: merges.count)
        for (rank, merge) in merges.enumerated() {
            let pair: [String]
            if let parts = merge as? [String] { pair = parts } else if let line = merge as? String {
                pair = line.split(separator: " ", omittingEmptySubsequences: false).map(String.init)
            } else { pair = [] }
            guard pair.count == 2, !pair[0].isEmpty, !pair[1].isEmpty else { throw fail("merge \(rank + 1) is not two symbols") }
            var key = pair[0] + " " + pair[1]
            key.withUTF8 { ranks.insert($0, value: rank, replacing: false) }
        }
        return (vocabulary, ranks)
    }

    /// The ids of `text` between the start and end tokens.
    public func encode(_ text: String) -> [Int] { [bos] + tokens(text) + [eos] }

    /// The ids of `text`, truncated or padded to `length` as FLUX's pipeline does.
    public func encode(_ text: String, length: Int) -> [Int] {
        tokens(text).framed(prefix: [bos], suffix: [eos], length: length, padding: pad)
    }

    /// Ids of the text alone, without the start and end tokens.
    public func tokens(_ text: String) -> [Int] {
        var ids: [Int] = []
        // transformers 4 splits the special tokens out of the raw text; the tokenizers backend
        // matches them in the normalised text (its added tokens are `normalized: true`), so
        // "<|ENDOFTEXT|>" is the end-of-text token there.
        let scalars = Array(text.unicodeScalars)
        for piece in added.split(rules == .transformers5 ? Self.normalize(scalars) : scalars, isSpace: UnicodeClass.isPythonSpace) {
            switch piece {
            case let .token(id): ids.append(id)
            case let .text(scalars):
                // transformers 4 cleans each piece between special tokens with BERT's BasicTokenizer.
                for word in Self.words(rules == .transformers4 ? Self.basicClean(scalars) : scalars, rules: rules) {
                    ids.append(contentsOf: bpe(word).map { vocabulary[$0] ?? unknown })
                }
            }
        }
        return ids
    }

    /// The normalizer transformers 5 writes into CLIP's `tokenizer.json`: NFC, then every
    /// whitespace run (Unicode White_Space) to one space, then each character's full lower-case
    /// mapping (no context: Σ is always σ, unlike Python's `str.lower()`).
    static func normalize(_ text: [Unicode.Scalar]) -> [Unicode.Scalar] {
        let composed = String(String.UnicodeScalarView(text)).precomposedStringWithCanonicalMapping
        var output: [Unicode.Scalar] = []
        var inSpace = false
        for scalar in composed.unicodeScalars {
            if scalar.properties.isWhitespace {
                if !inSpace { output.append(" ") }
                inSpace = true
                continue
            }
            inSpace = false
            output.append(contentsOf: scalar.properties.lowercaseMapping.unicodeScalars)
        }
        return output
    }

    /// transformers' BasicTokenizer (lower-case, no accent stripping, no punctuation split),
    /// joined back with single spaces.
    static func basicClean(_ text: [Unicode.Scalar]) -> [Unicode.Scalar] {
        var cleaned: [Unicode.Scalar] = []
        for scalar in text {
            if scalar.value == 0 || scalar.value == 0xFFFD { continue }
            let value = scalar.value
            let isSpace = value == 0x20 || value == 0x09 || value == 0x0A || value == 0x0D
                || UnicodeClass.category(scalar) == .spaceSeparator
            if isSpace {
                cleaned.append(" ")
            } else if UnicodeClass.isOther(scalar) {
                continue
            } else if isCJK(value) {
                cleaned.append(contentsOf: [" ", scalar, " "])
            } else {
                cleaned.append(scalar)
            }
        }
        let composed = String(String.UnicodeScalarView(cleaned)).precomposedStringWithCanonicalMapping
        var words: [[Unicode.Scalar]] = []
        var word: [Unicode.Scalar] = []
        for scalar in composed.unicodeScalars {
            if UnicodeClass.isPythonSpace(scalar) {
                if !word.isEmpty { words.append(word) }
                word = []
            } else {
                word.append(scalar)
            }
        }
        if !word.isEmpty { words.append(word) }
        return Array(words.map(UnicodeClass.pythonLower).joined(separator: [" "]))
    }

    /// The CJK Unified Ideographs blocks BERT's tokenizer isolates.
    static func isCJK(_ value: UInt32) -> Bool {
        (0x4E00...0x9FFF).contains(value) || (0x3400...0x4DBF).contains(value) || (0x20000...0x2A6DF).contains(value)
            || (0x2A700...0x2B73F).contains(value) || (0x2B740...0x2B81F).contains(value) || (0x2B820...0x2CEAF).contains(value)
            || (0xF900...0xFAFF).contains(value) || (0x2F800...0x2FA1F).contains(value)
    }

    /// The literal alternatives of CLIP's pattern, tried first at each position.
    static let literals = ["<|startoftext|>", "<|endoftext|>", "'s", "'t", "'re", "'ve", "'m", "'ll", "'d"].map { Array($0.unicodeScalars) }

    /// CLIP's pattern `<|startoftext|>|<|endoftext|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+`,
    /// alternatives tried in order at each position; unmatched characters (whitespace) are
    /// skipped, as `re.findall` and the tokenizers `Split` pre-tokenizer do. transformers 4 runs
    /// it case-insensitively in Python's `regex`, which puts U+0345 (combining ypogegrammeni, a
    /// mark whose case partner Ι is a letter) in none of the classes, so it is skipped too;
    /// transformers 5's pattern is case-sensitive and U+0345 is an ordinary mark.
    static func words(_ text: [Unicode.Scalar], rules: CLIPTokenizerRules) -> [[Unicode.Scalar]] {
        let caseInsensitive = rules == .transformers4
        func isSpace(_ scalar: Unicode.Scalar) -> Bool {
            if caseInsensitive { return scalar.value == 0x345 || scalar.properties.isWhitespace || UnicodeClass.isPythonSpace(scalar) }
            return scalar.properties.isWhitespace
        }
        var words: [[Unicode.Scalar]] = []
        var index = 0
        while index < text.count {
            if let literal = literals.first(where: { literal in
                index + literal.count <= text.count
                    && zip(literal, text[index...]).allSatisfy { $0 == $1 || (caseInsensitive && Character($1).lowercased() == String($0)) }
            }) {
                words.append(Array(text[index..<index + literal.count]))
                index += literal.count
                continue
            }
            let scalar = text[index]
            var end = index + 1
            if UnicodeClass.isLetter(scalar) {
                while end < text.count, UnicodeClass.isLetter(text[end]) { end += 1 }
            } else if UnicodeClass.isNumber(scalar) {
                // one digit per word
            } else if isSpace(scalar) {
                index += 1
                continue
            } else {
                while end < text.count, !isSpace(text[end]), !UnicodeClass.isLetter(text[end]), !UnicodeClass.isNumber(text[end]) {
                    end += 1
                }
            }
            words.append(Array(text[index..<end]))
            index = end
        }
        return words
    }

    /// GPT-2's reversible map from bytes to printable characters.
    static func byteToCharacter() -> [Character] {
        var printable = Array(33...126) + Array(161...172) + Array(174...255)
        var characters = printable
        var extra = 0
        for byte in 0..<256 where !printable.contains(byte) {
            printable.append(byte)
            characters.append(256 + extra)
            extra += 1
        }
        var table = [Character](repeating: " ", count: 256)
        for (byte, code) in zip(printable, characters) { table[byte] = Character(Unicode.Scalar(UInt32(code))!) }
        return table
    }

    /// The BPE symbols of one word (UTF-8 of the byte-mapped characters): lowest-ranked
    /// adjacent pair merged until none is left.
    func bpe(_ word: [Unicode.Scalar]) -> [[UInt8]] {
        let text = String(String.UnicodeScalarView(word))
        if text == "<|startoftext|>" || text == "<|endoftext|>" { return [Array(text.utf8)] }
        var symbols = text.utf8.map { byteSymbols[Int($0)] }
        guard !symbols.isEmpty else { return [] }
        symbols[symbols.count - 1] += Array("</w>".utf8)
        var pair: [UInt8] = []
        while symbols.count > 1 {
            var best: (rank: Int, index: Int)?
            for index in 0..<(symbols.count - 1) {
                pair.removeAll(keepingCapacity: true)
                pair += symbols[index]
                pair.append(0x20)
                pair += symbols[index + 1]
                if let rank = ranks[pair], rank < (best?.rank ?? Int.max) {
                    best = (rank, index)
                }
            }
            guard let best else { break }
            let first = symbols[best.index], second = symbols[best.index + 1]
            var merged: [[UInt8]] = []
            var index = 0
            while index < symbols.count {
                if index < symbols.count - 1, symbols[index] == first, symbols[index + 1] == second {
                    merged.append(first + second)
                    index += 2
                } else {
                    merged.append(symbols[index])
                    index += 1
                }
            }
            symbols = merged
        }
        return symbols
    }
}
