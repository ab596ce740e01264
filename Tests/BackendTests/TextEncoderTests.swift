import Foundation
import Testing
import LoRAFuse
import LoRAFuseModels
import LoRAFuseFusion
import LoRAFuseRetrieval
import LoRAFusePipeline
import LoRAFuseVerification
import LoRAFuseToyWorld
import LoRAFuseCPU

/// CLIP and T5 text encoders against transformers run in float64
/// (Tools/reference/make_text_encoder_fixtures.py), on every backend.
@Suite(.serialized) struct TextEncoderTests {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures/text")
    static let pipeline = fixtures.deletingLastPathComponent().appendingPathComponent("pipeline/flux-tiny")

    static func ids(_ name: String) throws -> [[Int]] {
        try ids(fixtures.appendingPathComponent("models/\(name)/inputs.safetensors"))
    }

    static func ids(_ url: URL) throws -> [[Int]] {
        let tensor = try SafeTensorsFile(path: url.path).tensor(named: "input_ids")
        let values = tensor.doubles().map { Int($0) }
        let length = tensor.shape[1]
        return stride(from: 0, to: values.count, by: length).map { Array(values[$0..<$0 + length]) }
    }

    static func expected(_ name: String, _ file: String = "expected") throws -> SafeTensorsFile {
        try SafeTensorsFile(path: fixtures.appendingPathComponent("models/\(name)/\(file).safetensors").path)
    }

    static func check(_ outputs: [HostTensor], _ names: [String], against file: SafeTensorsFile, tolerance: Double,
                      _ label: String) throws {
        for (output, name) in zip(outputs, names) {
            let expected = try file.tensor(named: name)
            #expect(output.shape == expected.shape, "\(label) \(name): \(output.shape) vs \(expected.shape)")
            let error = relativeError(actual: output.floats(), expected: expected.doubles())
            print("\(label) \(name) relative error \(error)")
            #expect(error <= tolerance, "\(label) \(name): relative error \(error)")
        }
    }

    @Test(arguments: ["clip-a", "clip-b", "t5-a", "t5-b", "t5-c", "t5-d"])
    func encodersMatchTransformers(_ name: String) throws {
        try Self.checkEncoder(at: Self.fixtures.appendingPathComponent("models/\(name)/model").path, isCLIP: name.hasPrefix("clip"),
                              ids: try Self.ids(name), against: Self.expected(name), name)
    }

    /// CLIPTextModel and T5EncoderModel saved by transformers 5.23 (CLIP's keys without
    /// `text_model.`), against the float64 outputs of the same weights.
    @Test(arguments: ["clip", "t5"])
    func encodersSavedByTransformers5Match(_ name: String) throws {
        let folder = Self.fixtures.appendingPathComponent("transformers5/\(name)")
        try Self.checkEncoder(at: folder.appendingPathComponent("model").path, isCLIP: name == "clip",
                              ids: try Self.ids(folder.appendingPathComponent("inputs.safetensors")),
                              against: SafeTensorsFile(path: folder.appendingPathComponent("expected.safetensors").path),
                              "transformers5 \(name)")
    }

    /// Loads a CLIP or T5 encoder, runs `ids` on every backend and checks its outputs.
    static func checkEncoder(at path: String, isCLIP: Bool, ids: [[Int]], against expected: SafeTensorsFile, _ label: String) throws {
        let (graph, inputs, outputs): (Graph, [String: HostTensor], [String])
        if isCLIP {
            let encoder = try CLIPTextEncoder.load(path: path)
            (graph, inputs, outputs) = (try encoder.graph(batch: ids.count, length: ids[0].count), try encoder.inputs(ids),
                                        ["last_hidden_state", "pooler_output"])
        } else {
            let encoder = try T5Encoder.load(path: path)
            (graph, inputs, outputs) = (try encoder.graph(batch: ids.count, length: ids[0].count), try encoder.inputs(ids), ["last_hidden_state"])
        }
        for backend in BackendsUnderTest.all {
            try check(try backend.execute(graph, inputs: inputs).outputs, outputs, against: expected, tolerance: 1e-4,
                      "\(label) \(BackendsUnderTest.label(backend))")
        }
    }

    /// A whole FluxPipeline folder written by diffusers 0.42 + transformers 5.23 (CLIP without
    /// `text_model.`, tokenizer.json only, sharded encoders) against its own `encode_prompt` in
    /// float64, with transformers 5's CLIP rules (the default): emoji with ZWJ and CJK included.
    @Test(arguments: ["cat", "zwj", "long"])
    func transformers5PipelineMatchesEncodePrompt(_ label: String) throws {
        let pipeline = Self.pipeline.deletingLastPathComponent().appendingPathComponent("flux-tiny-transformers5")
        try Self.checkEncodePrompt(try FluxTextEncoders.load(pipeline: pipeline.path),
                                   expected: pipeline.appendingPathComponent("expected_\(label).safetensors"), label)
    }

    static func checkEncodePrompt(_ encoders: FluxTextEncoders, expected url: URL, _ label: String) throws {
        let expected = try SafeTensorsFile(path: url.path)
        let prompt = try #require(expected.metadata["prompt"])
        for backend in BackendsUnderTest.all {
            let result = try encoders.encode(prompt, maxSequenceLength: 48, on: backend)
            let tensors = Dictionary(uniqueKeysWithValues: result.tensors.map { ($0.name, $0.tensor) })
            for name in ["clip_input_ids", "t5_input_ids"] {
                #expect(tensors[name]?.doubles() == (try expected.tensor(named: name)).doubles(), "\(label) \(name)")
            }
            if expected.contains("txt_ids") {
                #expect(tensors["txt_ids"]?.doubles() == (try expected.tensor(named: "txt_ids")).doubles(), "\(label) txt_ids")
            }
            try check([result.encoderHiddenStates, result.pooledProjections], ["encoder_hidden_states", "pooled_projections"],
                      against: expected, tolerance: 1e-4, "pipeline \(label) \(BackendsUnderTest.label(backend))")
        }
    }

    /// ComfyUI's single files: config inferred from shapes, same outputs.
    @Test func singleFilesLoadWithInferredConfigs() throws {
        let clip = try CLIPTextEncoder.load(path: Self.fixtures.appendingPathComponent("models/clip-a/clip_l.safetensors").path)
        let clipFolder = try CLIPTextEncoder.load(path: Self.fixtures.appendingPathComponent("models/clip-a/model").path)
        #expect(clip.config.hiddenSize == 48 && clip.config.layerCount == 2 && clip.config.intermediateSize == 100)
        var inferred = clip.config
        inferred.headCount = clipFolder.config.headCount  // heads are not visible in shapes (64-wide assumed)
        #expect(inferred == clipFolder.config)
        let t5 = try T5Encoder.load(path: Self.fixtures.appendingPathComponent("models/t5-a/t5xxl_fp16.safetensors").path)
        let t5Folder = try T5Encoder.load(path: Self.fixtures.appendingPathComponent("models/t5-a/model").path)
        #expect(t5.config == t5Folder.config)
        let ids = try Self.ids("t5-a")
        let backend = BackendsUnderTest.all[0]
        let outputs = try backend.execute(t5.graph(batch: ids.count, length: ids[0].count), inputs: t5.inputs(ids)).outputs
        try Self.check(outputs, ["last_hidden_state"], against: Self.expected("t5-a", "expected_fp16"), tolerance: 1e-4, "t5-a fp16 file")
    }

    /// A FLUX pipeline folder (CLIP in BF16 with the real vocabulary, T5 sharded) against
    /// diffusers' `FluxPipeline.encode_prompt(prompt, max_sequence_length=48)` in float64.
    /// The fixture was made with transformers 4.46, so its CLIP rules are asked for.
    @Test(arguments: ["cat", "long", "unicode"])
    func pipelineMatchesFluxPipelineEncodePrompt(_ label: String) throws {
        try Self.checkEncodePrompt(try FluxTextEncoders.load(pipeline: Self.pipeline.path, clipRules: .transformers4),
                                   expected: Self.pipeline.appendingPathComponent("expected_\(label).safetensors"), label)
    }

    /// A retrieval query runs CLIP only up to the end-of-text token (the attention is causal)
    /// and is still FLUX's pooled prompt embedding, for short, truncated and Unicode prompts.
    @Test(arguments: ["cat", "long", "unicode"])
    func retrievalQueryIsTheFluxPooledEmbedding(_ label: String) throws {
        let query = try RetrievalQueryEncoder.load(pipeline: Self.pipeline.path, clipRules: .transformers4)
        let expected = try SafeTensorsFile(path: Self.pipeline.appendingPathComponent("expected_\(label).safetensors").path)
        let prompt = try #require(expected.metadata["prompt"])
        for backend in BackendsUnderTest.all {
            let embedding = try query.embed(prompt, on: backend)
            let pooled = try expected.tensor(named: "pooled_projections")
            #expect(embedding.count == pooled.shape.last)
            let error = relativeError(actual: embedding, expected: pooled.doubles())
            print("retrieval query \(label) \(BackendsUnderTest.label(backend)) relative error \(error)")
            #expect(error <= 1e-4, "\(label): relative error \(error)")
        }
    }

    /// ComfyUI's fp8 T5 (matrices F8_E4M3, norms F16) runs with its weights kept in fp8 and
    /// matches transformers on the same rounded weights within the fp32 tolerance; against
    /// the full-precision model, fp8 rounding itself moves the output by a few percent
    /// (documented bound: 0.1).
    @Test func fp8WeightsRunNarrow() throws {
        let encoder = try T5Encoder.load(path: Self.fixtures.appendingPathComponent("models/t5-a/t5xxl_fp8_e4m3fn.safetensors").path)
        let ids = try Self.ids("t5-a")
        let graph = try encoder.graph(batch: ids.count, length: ids[0].count)
        let narrow = graph.nodes.filter { graph.parameters[$0.id] != nil && graph.weight($0.id).dtype == .float8E4M3 }
        #expect(narrow.count == 2 * 7 + 1, "every matrix and the embedding table stay F8_E4M3 in the graph")
        for backend in BackendsUnderTest.all {
            let outputs = try backend.execute(graph, inputs: encoder.inputs(ids)).outputs
            try Self.check(outputs, ["last_hidden_state"], against: Self.expected("t5-a", "expected_fp8_e4m3fn"), tolerance: 1e-4,
                           "t5-a fp8 \(BackendsUnderTest.label(backend))")
            try Self.check(outputs, ["last_hidden_state"], against: Self.expected("t5-a"), tolerance: 0.1,
                           "t5-a fp8 vs full precision \(BackendsUnderTest.label(backend))")
        }
    }

    /// A T5 encoder GGUF with llama.cpp's names (city96's T5-XXL encoder files): Q8_0 matrices
    /// and embedding table stay quantized; matches transformers in float64 on the stored values
    /// (Tools/reference/make_gguf_t5_fixture.py) on every backend (Vulkan gathers and
    /// dequantizes the table's rows with `gather_block`).
    @Test func t5GGUFWithLlamaCppNames() throws {
        let encoder = try T5Encoder.load(path: Self.fixtures.appendingPathComponent("models/t5-gguf/t5-q8_0.gguf").path)
        #expect(encoder.config.modelDim == 64 && encoder.config.headCount == 4 && encoder.config.layerCount == 2 && encoder.config.isGated)
        let ids = try Self.ids("t5-gguf")
        let graph = try encoder.graph(batch: ids.count, length: ids[0].count)
        let quantized = graph.nodes.filter { graph.parameters[$0.id] != nil && graph.weight($0.id).dtype == .q8_0 }
        #expect(quantized.count == 2 * 7 + 1, "every matrix and the embedding table stay Q8_0")
        for backend in BackendsUnderTest.all {
            let outputs = try backend.execute(graph, inputs: encoder.inputs(ids)).outputs
            try Self.check(outputs, ["last_hidden_state"], against: Self.expected("t5-gguf"), tolerance: 1e-4,
                           "t5 gguf q8_0 \(BackendsUnderTest.label(backend))")
        }
    }

    /// transformers' `_relative_position_bucket` for distances −600…600 (`buckets.json`),
    /// including those where the float32 logarithm lands on an integer.
    @Test func relativePositionBucketsMatchTransformers() throws {
        struct Buckets: Decodable { let first_relative: Int; let tables: [String: [Int]] }
        let data = try Data(contentsOf: Self.fixtures.appendingPathComponent("buckets.json"))
        let buckets = try JSONDecoder().decode(Buckets.self, from: data)
        #expect(buckets.tables.count == 3)
        for (key, table) in buckets.tables {
            let parts = key.split(separator: ",").compactMap { Int($0) }
            var config = T5EncoderConfig()
            config.bucketCount = parts[0]
            config.maxDistance = parts[1]
            let wrong = table.indices.filter { config.bucket(buckets.first_relative + $0) != table[$0] }
            #expect(wrong.isEmpty, "\(key): \(wrong.count) distances differ, first \(wrong.first.map { buckets.first_relative + $0 } ?? 0)")
        }
    }

    @Test func badCheckpointsAreOneClearError() throws {
        let missing = #expect(throws: ModelError.self) { try T5Encoder.load(path: "/nonexistent/t5") }
        #expect(missing?.description.contains("no such file") == true)
        // A CLIP file is not a T5 file, and the reverse.
        let clipFile = Self.fixtures.appendingPathComponent("models/clip-a/clip_l.safetensors").path
        let wrong = #expect(throws: ModelError.self) { try T5Encoder.load(path: clipFile) }
        #expect(wrong?.description.contains("not a T5 encoder") == true)
        let t5File = Self.fixtures.appendingPathComponent("models/t5-a/t5xxl_fp16.safetensors").path
        #expect(throws: ModelError.self) { try CLIPTextEncoder.load(path: t5File) }
        // Too many tokens for CLIP's positions.
        let clip = try CLIPTextEncoder.load(path: Self.fixtures.appendingPathComponent("models/clip-b/model").path)
        let long = #expect(throws: ModelError.self) { try clip.inputs([[Int](repeating: 1, count: 21)]) }
        #expect(long?.description.contains("20 positions") == true)
    }
}
