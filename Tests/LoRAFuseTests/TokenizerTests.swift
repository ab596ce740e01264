import Foundation
import Testing
@testable import LoRAFuse
@testable import LoRAFuseModels
@testable import LoRAFuseFusion
@testable import LoRAFuseRetrieval
@testable import LoRAFusePipeline
@testable import LoRAFuseVerification
@testable import LoRAFuseToyWorld

/// CLIP's BPE and T5's unigram tokenizers against the ids transformers gives for 64
/// written prompts (unicode, emoji, accents, CJK, control characters, special tokens as
/// text, long and empty prompts) and 400 random ones from many scripts:
/// `Tests/Fixtures/text/prompts.json`.
@Suite struct TokenizerTests {
    static let root = SafeTensorsTests.fixtures.appendingPathComponent("text")
    static let pipeline = SafeTensorsTests.fixtures.appendingPathComponent("pipeline/flux-tiny")

    struct Case: Decodable {
        let prompt: String
        let clip: [Int]
        let t5: [Int]
        /// sentencepiece's ids, where they differ from the fast tokenizer's.
        let t5_slow: [Int]?
        var sentencePiece: [Int] { t5_slow ?? t5 }
    }
    struct Cases: Decodable { let cases: [Case] }
    static let cases: [Case] = {
        let data = try! Data(contentsOf: root.appendingPathComponent("prompts.json"))
        return try! JSONDecoder().decode(Cases.self, from: data).cases
    }()

    static func mismatches(_ tokenizer: some TextTokenizer, length: Int, expected: KeyPath<Case, [Int]>) -> [String] {
        cases.compactMap { testCase in
            let ids = tokenizer.encode(testCase.prompt, length: length)
            return ids == testCase[keyPath: expected] ? nil : "\(testCase.prompt.debugDescription): \(ids) ≠ \(testCase[keyPath: expected])"
        }
    }

    /// prompts.json was made by transformers 4.46's slow tokenizer: its rules, asked for by name.
    @Test func clipMatchesTransformers4OnEveryPrompt() throws {
        let tokenizer = try CLIPTokenizer(folder: Self.pipeline.appendingPathComponent("tokenizer").path, rules: .transformers4)
        #expect(Self.cases.count >= 450)
        #expect(tokenizer.defaultLength == 77)
        let wrong = Self.mismatches(tokenizer, length: 77, expected: \.clip)
        #expect(wrong.isEmpty, "\(wrong.count) prompts differ:\n\(wrong.prefix(5).joined(separator: "\n"))")
    }

    @Test func t5FromTokenizerJSONMatchesTheFastTokenizer() throws {
        let tokenizer = try UnigramTokenizer.load(Self.pipeline.appendingPathComponent("tokenizer_2").path)
        let wrong = Self.mismatches(tokenizer, length: 96, expected: \.t5)
        #expect(wrong.isEmpty, "\(wrong.count) prompts differ:\n\(wrong.prefix(5).joined(separator: "\n"))")
    }

    @Test func t5FromSpieceModelMatchesSentencePiece() throws {
        let tokenizer = try UnigramTokenizer.load(Self.pipeline.appendingPathComponent("tokenizer_2/spiece.model").path)
        let wrong = Self.mismatches(tokenizer, length: 96, expected: \.sentencePiece)
        #expect(Self.cases.filter { $0.t5_slow != nil }.count >= 10, "cases where sentencepiece and the fast tokenizer differ")
        #expect(wrong.isEmpty, "\(wrong.count) prompts differ:\n\(wrong.prefix(5).joined(separator: "\n"))")
    }

    @Test func unpaddedIdsCarryTheSpecialTokensAndTruncationKeepsThem() throws {
        let clip = try CLIPTokenizer(folder: Self.pipeline.appendingPathComponent("tokenizer").path)
        let ids = clip.encode("a photo of a cat")
        #expect(ids.first == clip.bos && ids.last == clip.eos && ids.count == 7)
        let short = clip.encode("a photo of a cat", length: 4)
        #expect(short == [clip.bos] + ids[1...2] + [clip.eos])
        let t5 = try UnigramTokenizer.load(Self.pipeline.appendingPathComponent("tokenizer_2").path)
        #expect(t5.encode("") == [1])
        #expect(t5.encode("a cat", length: 2).last == 1)
    }

    @Test func badTokenizerFilesAreOneClearError() throws {
        let folder = TemporaryDirectory()
        let url = URL(fileURLWithPath: folder.path)
        #expect(throws: TokenizerError.self) { try CLIPTokenizer(folder: url.path) }
        try Data("{\"a\": 1}".utf8).write(to: url.appendingPathComponent("vocab.json"))
        try Data("#version\na b c\n".utf8).write(to: url.appendingPathComponent("merges.txt"))
        let error = try #require(throws: TokenizerError.self) { try CLIPTokenizer(folder: url.path) }
        #expect(error.description.contains("line 2"))
        try Data([0x0A, 0xFF, 0xFF]).write(to: url.appendingPathComponent("spiece.model"))
        #expect(throws: TokenizerError.self) { try UnigramTokenizer.load(url.appendingPathComponent("spiece.model").path) }
        try Data("{\"model\": {\"type\": \"BPE\"}}".utf8).write(to: url.appendingPathComponent("tokenizer.json"))
        let json = try #require(throws: TokenizerError.self) { try UnigramTokenizer.load(url.path) }
        #expect(json.description.contains("only Unigram"))
    }
}

/// CLIP by transformers 5's rules (the default) against the ids transformers 5.23's
/// `CLIPTokenizer` gives on the same prompts plus 60 more (emoji with ZWJ, CJK, accents, special
/// tokens as text, long, empty): `Tests/Fixtures/text/prompts-transformers5.json`, which also
/// carries transformers 4's ids where they differ, so both rule sets meet the same prompts.
@Suite struct CLIPTokenizerRulesTests {
    struct Case: Decodable {
        let prompt: String
        let clip: [Int]
        let clip_transformers4: [Int]?
    }
    struct Cases: Decodable { let cases: [Case] }
    static let cases: [Case] = {
        let data = try! Data(contentsOf: TokenizerTests.root.appendingPathComponent("prompts-transformers5.json"))
        return try! JSONDecoder().decode(Cases.self, from: data).cases
    }()
    static let folder = TokenizerTests.pipeline.appendingPathComponent("tokenizer").path

    static func mismatches(_ tokenizer: CLIPTokenizer, _ expected: (Case) -> [Int]?) -> [String] {
        cases.compactMap { testCase in
            guard let want = expected(testCase) else { return nil }
            let ids = tokenizer.encode(testCase.prompt, length: 77)
            return ids == want ? nil : "\(testCase.prompt.debugDescription): \(ids) ≠ \(want)"
        }
    }

    @Test func defaultRulesAreTransformers5OnEveryPrompt() throws {
        let tokenizer = try CLIPTokenizer(folder: Self.folder)
        #expect(tokenizer.rules == .transformers5)
        #expect(Self.cases.count >= 470)
        let wrong = Self.mismatches(tokenizer) { $0.clip }
        #expect(wrong.isEmpty, "\(wrong.count) prompts differ:\n\(wrong.prefix(5).joined(separator: "\n"))")
    }

    /// Where transformers 4 and 5 disagree (CJK, ZWJ, controls…), the option gives transformers 4's ids.
    @Test func transformers4RulesOnTheSamePrompts() throws {
        let tokenizer = try CLIPTokenizer(folder: Self.folder, rules: .transformers4)
        #expect(Self.cases.filter { $0.clip_transformers4 != nil }.count >= 50)
        // The prompts of prompts.json have transformers 4 ids: the recorded ones where they differ, else the same.
        let transformers4Prompts = Set(TokenizerTests.cases.map(\.prompt))
        let wrong = Self.mismatches(tokenizer) { testCase in
            testCase.clip_transformers4 ?? (transformers4Prompts.contains(testCase.prompt) ? testCase.clip : nil)
        }
        #expect(wrong.isEmpty, "\(wrong.count) prompts differ:\n\(wrong.prefix(5).joined(separator: "\n"))")
    }

    /// transformers 5 saves CLIPTokenizer as tokenizer.json alone; it reads as vocab.json + merges.txt do.
    @Test func tokenizerJSONAloneLoads() throws {
        let saved = TokenizerTests.pipeline.deletingLastPathComponent().appendingPathComponent("flux-tiny-transformers5/tokenizer")
        #expect(!FileManager.default.fileExists(atPath: saved.appendingPathComponent("vocab.json").path))
        let tokenizer = try CLIPTokenizer(folder: saved.path)
        #expect(tokenizer.vocabularySize == 2000 + 512 + 2)
        let ids = tokenizer.encode("a photo of a cat")
        #expect(ids.first == tokenizer.bos && ids.last == tokenizer.eos && ids.count > 4)
        let folder = TemporaryDirectory()
        try Data("{\"model\": {\"type\": \"Unigram\"}}".utf8).write(to: URL(fileURLWithPath: folder.path).appendingPathComponent("tokenizer.json"))
        let error = try #require(throws: TokenizerError.self) { try CLIPTokenizer(folder: folder.path) }
        #expect(error.description.contains("expected BPE"))
    }
}
