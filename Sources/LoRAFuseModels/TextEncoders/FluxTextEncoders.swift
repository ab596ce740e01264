import Foundation
import LoRAFuse

/// FLUX's two text encoders with their tokenizers, as diffusers' `FluxPipeline.encode_prompt`
/// uses them: CLIP-L's pooled output (77 tokens) and T5's token states (`max_sequence_length`
/// tokens: 512 for FLUX.1-dev, 256 for schnell).
public struct FluxTextEncoders: Sendable {
    public let clipTokenizer: CLIPTokenizer
    public let clip: CLIPTextEncoder
    public let t5Tokenizer: UnigramTokenizer
    public let t5: T5Encoder

    /// The two encoders and their tokenizers.
    public init(clipTokenizer: CLIPTokenizer, clip: CLIPTextEncoder, t5Tokenizer: UnigramTokenizer, t5: T5Encoder) {
        self.clipTokenizer = clipTokenizer
        self.clip = clip
        self.t5Tokenizer = t5Tokenizer
        self.t5 = t5
    }

    /// A diffusers FLUX pipeline folder: `text_encoder/`, `tokenizer/`, `text_encoder_2/`, `tokenizer_2/`.
    /// `clipRules`: whose CLIP tokenization to reproduce (transformers 5 unless asked).
    public static func load(pipeline path: String, clipRules: CLIPTokenizerRules = .transformers5) throws -> FluxTextEncoders {
        let root = URL(fileURLWithPath: path)
        var isFolder: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isFolder), isFolder.boolValue else {
            throw ModelError.notAModel(path: path, reason: "not a folder (expected a FLUX pipeline folder with text_encoder/, tokenizer/, text_encoder_2/, tokenizer_2/)")
        }
        for part in ["text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2"] {
            guard FileManager.default.fileExists(atPath: root.appendingPathComponent(part).path) else {
                throw ModelError.notAModel(path: path, reason: "no \(part)/ (expected a FLUX pipeline folder with text_encoder/, tokenizer/, text_encoder_2/, tokenizer_2/)")
            }
        }
        return try load(clip: root.appendingPathComponent("text_encoder").path, clipTokenizer: root.appendingPathComponent("tokenizer").path,
                        t5: root.appendingPathComponent("text_encoder_2").path, t5Tokenizer: root.appendingPathComponent("tokenizer_2").path,
                        clipRules: clipRules)
    }

    /// Separate parts, as ComfyUI users keep them: each encoder a transformers folder or one
    /// safetensors file (`clip_l.safetensors`, `t5xxl_fp16.safetensors`, `t5xxl_fp8_e4m3fn.safetensors`),
    /// each tokenizer a folder (`vocab.json` + `merges.txt`; `tokenizer.json` or `spiece.model`).
    public static func load(clip: String, clipTokenizer: String, t5: String, t5Tokenizer: String,
                            clipRules: CLIPTokenizerRules = .transformers5) throws -> FluxTextEncoders {
        let clipEncoder = try CLIPTextEncoder.load(path: clip)
        let clipTokens = try CLIPTokenizer(folder: clipTokenizer, rules: clipRules)
        let t5Encoder = try T5Encoder.load(path: t5)
        let t5Tokens = try UnigramTokenizer.load(t5Tokenizer)
        guard clipTokens.largestID < clipEncoder.config.vocabSize else {
            throw ModelError.notAModel(path: clipTokenizer, reason:
                "the tokenizer's ids reach \(clipTokens.largestID), past the \(clipEncoder.config.vocabSize) embeddings of \(clip)")
        }
        guard t5Tokens.pieces.count <= t5Encoder.config.vocabSize else {
            throw ModelError.notAModel(path: t5Tokenizer, reason:
                "the tokenizer has \(t5Tokens.pieces.count) pieces, more than the \(t5Encoder.config.vocabSize) embeddings of \(t5)")
        }
        return FluxTextEncoders(clipTokenizer: clipTokens, clip: clipEncoder, t5Tokenizer: t5Tokens, t5: t5Encoder)
    }

    /// What `lorafuse dit` takes as text conditioning, and the ids that produced it.
    public struct Conditioning: Sendable {
        /// T5's last hidden state [1, T, D].
        public let encoderHiddenStates: HostTensor
        /// CLIP's pooled output [1, P].
        public let pooledProjections: HostTensor
        /// Zeros [T, 3], FLUX's text position ids.
        public let textIds: HostTensor
        public let clipIds: [Int]
        public let t5Ids: [Int]
        public let clipSeconds: Double
        public let t5Seconds: Double

        /// Named as `lorafuse dit` and diffusers name them; ids as int64.
        public var tensors: [(name: String, tensor: HostTensor)] {
            [("encoder_hidden_states", encoderHiddenStates), ("pooled_projections", pooledProjections), ("txt_ids", textIds),
             ("clip_input_ids", HostTensor(shape: [1, clipIds.count], dtype: .int64, values: clipIds.map(Double.init))),
             ("t5_input_ids", HostTensor(shape: [1, t5Ids.count], dtype: .int64, values: t5Ids.map(Double.init)))]
        }
    }

    /// Encodes one prompt on `backend`: CLIP first, then T5 (each graph built, run and released in turn).
    public func encode(_ prompt: String, maxSequenceLength: Int = 512, on backend: any Backend) throws -> Conditioning {
        guard maxSequenceLength > 0 else { throw ModelError.invalidInputs("max sequence length must be positive") }
        let clipLength = min(clipTokenizer.defaultLength, clip.config.maxPositions)
        let clipIds = clipTokenizer.encode(prompt, length: clipLength)
        var start = DispatchTime.now().uptimeNanoseconds
        let pooled = try backend.execute(clip.graph(batch: 1, length: clipLength), inputs: clip.inputs([clipIds])).outputs[1]
        let clipSeconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        let t5Ids = t5Tokenizer.encode(prompt, length: maxSequenceLength)
        start = DispatchTime.now().uptimeNanoseconds
        let states = try backend.execute(t5.graph(batch: 1, length: maxSequenceLength), inputs: t5.inputs([t5Ids])).outputs[0]
        let t5Seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        return Conditioning(encoderHiddenStates: states, pooledProjections: pooled,
                            textIds: HostTensor(shape: [maxSequenceLength, 3], floats: [Float](repeating: 0, count: maxSequenceLength * 3)),
                            clipIds: clipIds, t5Ids: t5Ids, clipSeconds: clipSeconds, t5Seconds: t5Seconds)
    }
}
