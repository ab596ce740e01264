import ArgumentParser
import Foundation
import LoRAFuse
import LoRAFuseModels
import LoRAFuseFusion
import LoRAFuseRetrieval
import LoRAFusePipeline
import LoRAFuseVerification
import LoRAFuseToyWorld

/// `lorafuse encode`: a prompt through FLUX's CLIP-L and T5 (docs/contracts.md).
struct EncodeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "encode",
        abstract: "Encode a prompt with FLUX's text encoders: the text conditioning of `lorafuse dit`.",
        discussion: """
        --text-encoders: a diffusers FLUX pipeline folder (text_encoder/, tokenizer/, text_encoder_2/, tokenizer_2/).
        Or the parts as ComfyUI users keep them: --clip (clip_l.safetensors or a folder) with --clip-tokenizer
        (vocab.json + merges.txt), --t5 (t5xxl_fp16.safetensors, t5xxl_fp8_e4m3fn.safetensors or a folder) with
        --t5-tokenizer (tokenizer.json or spiece.model).
        --output: encoder_hidden_states [1, T, D], pooled_projections [1, P], txt_ids [T, 3], clip_input_ids and
        t5_input_ids (int64), written atomically.
        """
    )

    @Option(name: .long, help: "A diffusers FLUX pipeline folder.")
    var textEncoders: String?

    @OptionGroup var parts: TextEncoderParts

    @Option(name: .long, help: "The prompt.")
    var prompt: String

    @Option(name: .long, parsing: .unconditional, help: "T5 tokens: 512 for FLUX.1-dev, 256 for FLUX.1-schnell (diffusers' max_sequence_length).")
    var maxSequenceLength = 512

    @Option(name: .long, help: "Where to write the conditioning (.safetensors).")
    var output: String?

    @OptionGroup var backendOptions: BackendOptions

    @Flag(name: .long, help: "Print a JSON line with timings and peak memory.")
    var json = false

    func validate() throws {
        let given = parts.all
        if textEncoders != nil {
            guard given.allSatisfy({ $0 == nil }) else {
                throw ValidationError("give --text-encoders, or --clip/--clip-tokenizer/--t5/--t5-tokenizer, not both")
            }
        } else if given.contains(where: { $0 == nil }) {
            throw ValidationError("give --text-encoders PIPELINE_FOLDER, or all of --clip, --clip-tokenizer, --t5 and --t5-tokenizer")
        }
        guard (1...4096).contains(maxSequenceLength) else { throw ValidationError("--max-sequence-length must be in 1...4096") }
    }

    func run() throws {
        let loadStart = DispatchTime.now().uptimeNanoseconds
        let backend = try backendOptions.makeBackend()
        let encoders: FluxTextEncoders
        if let textEncoders {
            encoders = try FluxTextEncoders.load(pipeline: textEncoders, clipRules: parts.clipTokenizerRules)
        } else {
            encoders = try FluxTextEncoders.load(clip: parts.clip!, clipTokenizer: parts.clipTokenizer!, t5: parts.t5!, t5Tokenizer: parts.t5Tokenizer!,
                                                 clipRules: parts.clipTokenizerRules)
        }
        let loadSeconds = Double(DispatchTime.now().uptimeNanoseconds - loadStart) / 1e9
        let result = try encoders.encode(prompt, maxSequenceLength: maxSequenceLength, on: backend)
        if let output {
            try SafeTensorsWriter.write(result.tensors, metadata: ["producer": "lorafuse encode", "backend": backend.name, "prompt": prompt,
                                                                   "max_sequence_length": String(maxSequenceLength)], to: output)
        }
        let fields: [String: Any] = [
            "command": "encode", "backend": backend.name, "device": backend.device.name,
            "seconds": result.clipSeconds + result.t5Seconds, "clip_seconds": result.clipSeconds, "t5_seconds": result.t5Seconds,
            "load_seconds": loadSeconds, "peak_rss_bytes": PeakMemory.residentBytes(),
            "clip_tokens": result.clipIds.count, "t5_tokens": result.t5Ids.count,
            "t5_width": encoders.t5.config.modelDim, "pooled_width": encoders.clip.config.hiddenSize,
        ]
        if json {
            print(try JSONOutput.line(fields))
        } else {
            print(String(format: "encode on %@ (%@): CLIP %.3f s, T5 %.3f s (%d tokens), load %.3f s, peak RSS %.1f MiB%@",
                         backend.name, backend.device.name, result.clipSeconds, result.t5Seconds, maxSequenceLength, loadSeconds,
                         Double(PeakMemory.residentBytes()) / 1048576, output.map { ", wrote \($0)" } ?? ""))
        }
    }
}

/// `--clip`, `--clip-tokenizer`, `--t5`, `--t5-tokenizer`: FLUX's text encoders as separate
/// parts (ComfyUI's single files and the diffusers release's tokenizer folders).
struct TextEncoderParts: ParsableArguments {
    @Option(name: .long, help: "CLIP text encoder: clip_l.safetensors or a folder.")
    var clip: String?

    @Option(name: .long, help: "CLIP tokenizer folder (vocab.json + merges.txt, or transformers 5's tokenizer.json).")
    var clipTokenizer: String?

    @Option(name: .long, help: ArgumentHelp(
        "Whose CLIP tokenization to reproduce: transformers5 (default) or transformers4.",
        discussion: "transformers 5 runs the tokenizers backend (NFC, whitespace runs to one space, lower case); transformers 4's slow tokenizer also split CJK characters apart and dropped format characters such as U+200D. Use transformers4 to match ids or embeddings made with transformers 4."))
    var clipTokenizerRules: CLIPTokenizerRules = .transformers5

    @Option(name: .long, help: "T5 encoder: t5xxl_fp16 / t5xxl_fp8_e4m3fn .safetensors or a folder (F32/F16/BF16/F8).")
    var t5: String?

    @Option(name: .long, help: "T5 tokenizer folder or file (tokenizer.json or spiece.model).")
    var t5Tokenizer: String?

    var all: [String?] { [clip, clipTokenizer, t5, t5Tokenizer] }
}

extension CLIPTokenizerRules: ExpressibleByArgument {}
