import ArgumentParser
import Foundation
import LoRAFuse
import LoRAFuseModels
import LoRAFuseFusion
import LoRAFuseRetrieval
import LoRAFusePipeline
import LoRAFuseVerification
import LoRAFuseToyWorld

/// `lorafuse tokenize`: the ids a tokenizer folder gives, to compare with another tool's.
struct TokenizeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tokenize",
        abstract: "Print the token ids of prompts (CLIP BPE or SentencePiece unigram), one JSON line each.",
        discussion: """
        --tokenizer: a folder with vocab.json + merges.txt or a BPE tokenizer.json (CLIP), or a Unigram tokenizer.json /
        spiece.model (T5); or the file. --clip-tokenizer-rules transformers4 gives transformers 4's CLIP ids.
        --prompts: a file with one JSON string per line (so prompts may hold newlines), instead of --prompt.
        Without --length the ids carry the special tokens, untruncated; with it they are truncated and padded
        as transformers' padding="max_length", truncation=True.
        """
    )

    @Option(name: .long, help: "Tokenizer folder or file.")
    var tokenizer: String

    @Option(name: .long, help: "One prompt.")
    var prompt: String?

    @Option(name: .long, help: "A file of prompts, one JSON string per line.")
    var prompts: String?

    @Option(name: .long, parsing: .unconditional, help: "Truncate and pad to this many ids.")
    var length: Int?

    @Option(name: .long, help: "CLIP only: transformers5 (default) or transformers4 tokenization.")
    var clipTokenizerRules: CLIPTokenizerRules = .transformers5

    func validate() throws {
        guard (prompt == nil) != (prompts == nil) else { throw ValidationError("give --prompt or --prompts, not both or neither") }
        if let length, !(1...65536).contains(length) { throw ValidationError("--length must be in 1...65536, got \(length)") }
    }

    func run() throws {
        let tokens: any TextTokenizer = CLIPTokenizer.recognizes(folder: tokenizer)
            ? try CLIPTokenizer(folder: tokenizer, rules: clipTokenizerRules) : try UnigramTokenizer.load(tokenizer)
        var texts: [String] = []
        if let prompt { texts = [prompt] }
        if let prompts {
            let text = try InputFile.text(prompts) { ValidationError("\(prompts): cannot read: \($0)") }
            for (number, line) in text.split(separator: "\n").enumerated() {
                guard let value = try? JSONSerialization.jsonObject(with: Data(line.utf8), options: [.fragmentsAllowed]) as? String else {
                    throw ValidationError("\(prompts): line \(number + 1) is not a JSON string")
                }
                texts.append(value)
            }
        }
        for text in texts {
            let ids = length.map { tokens.encode(text, length: $0) } ?? tokens.encode(text)
            print("[" + ids.map(String.init).joined(separator: ",") + "]")
        }
    }
}
