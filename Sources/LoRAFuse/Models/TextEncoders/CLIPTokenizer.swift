import Foundation

/// CLIP's byte-level BPE tokenizer, token for token as transformers' `CLIPTokenizer` (the
/// one diffusers' FluxPipeline loads, without the optional ftfy package): special tokens
/// split out; text cleaned (NUL, U+FFFD and control/format characters dropped, whitespace
/// collapsed), spaces put around CJK ideographs, NFC, Python's lower-casing; CLIP's word
/// pattern; UTF-8 bytes mapped to printable characters; BPE merges by rank with `</w>`
/// ending each word.
public struct CLIPTokenizer: TextTokenizer {
    public let bos: Int
    public let eos: Int
    public let pad: Int
    public let unknown: Int
    public let defaultLength: Int
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

    /// Loads `vocab.json`, `merges.txt` and (when present) `tokenizer_config.json` /
    /// `special_tokens_map.json` from a tokenizer folder.
    public init(folder: String) throws {
        let root = URL(fileURLWithPath: folder)
        let vocabURL = root.appendingPathComponent("vocab.json")
        let mergesURL = root.appendingPathComponent("merges.txt")
        // The two tables are built at once, one per core (~10 ms each).
        let merges = Pending { try Self.mergeRanks(mergesURL) }
        let vocabulary = try TokenizerFiles.vocabulary(vocabURL)
        guard vocabulary.count > 0 else { throw TokenizerError(path: vocabURL.path, reason: "expected an object of token → id") }
        let ranks = try merges.value()
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
        guard let data = FileManager.default.contents(atPath: url.path) else {
            throw TokenizerError(path: url.path, reason: "cannot read the merges")
        }
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

    public func encode(_ text: String) -> [Int] { [bos] + tokens(text) + [eos] }

    public func encode(_ text: String, length: Int) -> [Int] {
        tokens(text).framed(prefix: [bos], suffix: [eos], length: length, padding: pad)
    }

    /// Ids of the text alone, without the start and end tokens.
    public func tokens(_ text: String) -> [Int] {
        var ids: [Int] = []
        for piece in added.split(Array(text.unicodeScalars), isSpace: UnicodeClass.isPythonSpace) {
            switch piece {
            case let .token(id): ids.append(id)
            case let .text(scalars):
                for word in Self.words(Self.basicClean(scalars)) {
                    ids.append(contentsOf: bpe(word).map { vocabulary[$0] ?? unknown })
                }
            }
        }
        return ids
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

    /// CLIP's pattern `<|startoftext|>|<|endoftext|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+`
    /// (case-insensitive), alternatives tried in order at each position; unmatched
    /// characters are skipped, as `re.findall` does: whitespace, and U+0345 (combining
    /// ypogegrammeni), the one character that case-insensitive matching in Python's `regex`
    /// puts in none of the classes (it is a mark whose case partner Ι is a letter).
    static func words(_ text: [Unicode.Scalar]) -> [[Unicode.Scalar]] {
        func isSpace(_ scalar: Unicode.Scalar) -> Bool {
            scalar.value == 0x345 || scalar.properties.isWhitespace || UnicodeClass.isPythonSpace(scalar)
        }
        var words: [[Unicode.Scalar]] = []
        var index = 0
        while index < text.count {
            if let literal = literals.first(where: { literal in
                index + literal.count <= text.count
                    && zip(literal, text[index...]).allSatisfy { $0 == $1 || Character($1).lowercased() == String($0) }
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
