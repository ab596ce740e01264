import Foundation
import Testing
@testable import LoRAFuse
@testable import LoRAFuseModels
@testable import LoRAFuseFusion
@testable import LoRAFuseRetrieval
@testable import LoRAFusePipeline
@testable import LoRAFuseVerification
@testable import LoRAFuseToyWorld

/// Reading LoRA files: format detection, alpha sources, fused-layer splitting, and one
/// clear error for every kind of bad file.
@Suite struct LoRAFileTests {
    static let fixtures = SafeTensorsTests.fixtures.appendingPathComponent("lora")
    static func fixture(_ name: String) -> String { fixtures.appendingPathComponent("\(name).safetensors").path }
    static let model = try! FluxModel.load(path: SafeTensorsTests.fixtures.appendingPathComponent("flux/dev-tiny").path)

    @Test(arguments: [("all.peft", LoRAFormat.peft, 50), ("all.kohya", .kohya, 50), ("all.bfl", .bfl, 50),
                      ("partial.peft", .peft, 18), ("attention.xlabs", .xlabs, 24), ("attention.diffsynth", .diffSynth, 26),
                      ("attention.peft", .peft, 24)])
    // DiffSynth fuses q, k, v and the MLP in single blocks: its zero MLP rows still make proj_mlp modules (26).
    func detectsTheFormatAndEveryLayer(_ name: String, _ format: LoRAFormat, _ layers: Int) throws {
        let file = try LoRAFile.load(path: Self.fixture(name), model: Self.model)
        #expect(file.format == format)
        #expect(file.modules.count == layers)
        #expect(Set(file.modules.map(\.layer)).count == layers)
        let known = Set(Self.model.config.linearLayers.map(\.name))
        #expect(file.modules.allSatisfy { known.contains($0.layer) })
    }

    @Test func alphaComesFromMetadataPatternsAndTensors() throws {
        let partial = try LoRAFile.load(path: Self.fixture("partial.peft"), model: Self.model)
        let toK = try #require(partial.modules.first { $0.layer == "transformer_blocks.0.attn.to_k" })
        #expect(toK.alpha == 5 && toK.rank == 6 && toK.scale == Float(5) / 6)  // alpha_pattern
        let mlp = try #require(partial.modules.first { $0.layer == "single_transformer_blocks.1.proj_mlp" })
        #expect(mlp.rank == 3 && mlp.alpha == 3)  // rank_pattern, alpha from lora_alpha
        #expect(partial.alphaSource == .metadata)
        let kohya = try LoRAFile.load(path: Self.fixture("all.kohya"), model: Self.model)
        let qkv = kohya.modules.filter { $0.sourceModule == "lora_unet_double_blocks_1_img_attn_qkv" }
        #expect(qkv.map(\.layer) == ["attn.to_q", "attn.to_k", "attn.to_v"].map { "transformer_blocks.1.\($0)" })
        #expect(qkv.allSatisfy { $0.rank == 12 && $0.scale == 2 && $0.up.shape == [32, 12] })
        let linear1 = kohya.modules.filter { $0.sourceModule == "lora_unet_single_blocks_0_linear1" }
        #expect(linear1.last?.layer == "single_transformer_blocks.0.proj_mlp" && linear1.last?.up.shape == [128, 16])
        let bfl = try LoRAFile.load(path: Self.fixture("all.bfl"), model: Self.model)
        #expect(bfl.modules.allSatisfy { $0.alpha == Float($0.rank) })
    }

    /// Writes a copy of a fixture with its tensors edited.
    func edited(_ name: String, in directory: TemporaryDirectory, metadata: [String: String] = [:],
                _ edit: (inout [String: HostTensor]) -> Void) throws -> String {
        var tensors = try SafeTensorsFile(path: Self.fixture(name)).allTensors()
        edit(&tensors)
        let path = directory.file("edited.safetensors")
        try SafeTensorsWriter.write(tensors, metadata: metadata, to: path)
        return path
    }

    @Test func unknownKeysAreAnErrorListingThemUnlessAllowed() throws {
        let directory = TemporaryDirectory()
        let path = try edited("all.peft", in: directory) { tensors in
            tensors["transformer.transformer_blocks.0.attn.to_qq.lora_A.weight"] = HostTensor(shape: [4, 32], floats: .init(repeating: 1, count: 128))
            tensors["transformer.pos_embed.weight"] = HostTensor(shape: [2], floats: [1, 2])
        }
        #expect {
            try LoRAFile.load(path: path, model: Self.model)
        } throws: { error in
            guard case let LoRAError.unmatchedKeys(_, keys) = error else { return false }
            return keys == ["transformer.pos_embed.weight", "transformer.transformer_blocks.0.attn.to_qq.lora_A.weight"]
        }
        let allowed = try LoRAFile.load(path: path, model: Self.model, allowUnmatchedKeys: true)
        #expect(allowed.unmatchedKeys.count == 2 && allowed.modules.count == 50)
    }

    @Test func aLoRAForAnotherModelNamesTheKeyAndBothShapes() throws {
        let wide = try FluxModel.load(path: SafeTensorsTests.fixtures.appendingPathComponent("flux/dev-wide").path)
        #expect {
            try LoRAFile.load(path: Self.fixture("all.peft"), model: wide)
        } throws: { error in
            guard case let LoRAError.shapeMismatch(_, key, actual, expected) = error else { return false }
            return key.hasSuffix("lora_A.weight") && actual.dimensions.count == 2 && expected.contains("64")
        }
        // A layer the model does not have (block 2 of a 2-block model).
        let directory = TemporaryDirectory()
        let path = try edited("attention.peft", in: directory) { tensors in
            for (key, value) in tensors where key.contains("transformer_blocks.1.") && !key.contains("single") {
                tensors[key.replacingOccurrences(of: "transformer_blocks.1.", with: "transformer_blocks.2.")] = value
            }
        }
        #expect(throws: LoRAError.self) { try LoRAFile.load(path: path, model: Self.model) }
    }

    @Test func badFilesGiveOneClearError() throws {
        let directory = TemporaryDirectory()
        // A module without its up factor.
        let incomplete = try edited("all.peft", in: directory) { $0["transformer.x_embedder.lora_B.weight"] = nil }
        #expect(throws: LoRAError.incompleteModule(path: incomplete, module: "transformer.x_embedder", missing: "up (lora_B)")) {
            try LoRAFile.load(path: incomplete, model: Self.model)
        }
        // An alpha that is not one number.
        let alpha = try edited("all.kohya", in: directory) { $0["lora_unet_img_in.alpha"] = HostTensor(shape: [2], floats: [1, 2]) }
        #expect(throws: LoRAError.invalidAlpha(path: alpha, key: "lora_unet_img_in.alpha", reason: "expected one number, got 2 value(s)")) {
            try LoRAFile.load(path: alpha, model: Self.model)
        }
        // Ranks of A and B that disagree.
        let rank = try edited("all.peft", in: directory) { $0["transformer.x_embedder.lora_B.weight"] = HostTensor(shape: [32, 3], floats: .init(repeating: 0.5, count: 96)) }
        #expect(throws: LoRAError.self) { try LoRAFile.load(path: rank, model: Self.model) }
        // One layer reached twice (separate to_q and a fused qkv).
        let twice = try edited("attention.peft", in: directory) { tensors in
            let kohya = try! SafeTensorsFile(path: Self.fixture("all.kohya")).allTensors()
            for suffix in ["lora_down.weight", "lora_up.weight", "alpha"] {
                tensors["lora_unet_double_blocks_0_img_attn_qkv.\(suffix)"] = kohya["lora_unet_double_blocks_0_img_attn_qkv.\(suffix)"]
            }
        }
        #expect { try LoRAFile.load(path: twice, model: Self.model) } throws: { error in
            if case LoRAError.duplicateTarget = error { return true }
            return false
        }
        // Metadata that is not JSON.
        let metadata = try edited("all.peft", in: directory, metadata: ["lora_adapter_metadata": "{\"transformer.lora_alpha\": "]) { _ in }
        #expect(throws: LoRAError.self) { try LoRAFile.load(path: metadata, model: Self.model) }
        // Truncated and empty files.
        let bytes = try Data(contentsOf: URL(fileURLWithPath: Self.fixture("all.peft")))
        let truncated = directory.file("truncated.safetensors")
        try bytes.prefix(bytes.count / 2).write(to: URL(fileURLWithPath: truncated))
        #expect { try LoRAFile.load(path: truncated) } throws: { error in
            guard case let LoRAError.notALoRA(path, _) = error else { return false }
            return path == truncated
        }
        let empty = directory.file("empty.safetensors")
        try SafeTensorsWriter.write([String: HostTensor](), to: empty)
        #expect(throws: LoRAError.notALoRA(path: empty, reason: "the file holds no tensors")) { try LoRAFile.load(path: empty) }
        #expect(throws: LoRAError.self) { try LoRAFile.load(path: directory.file("missing.safetensors")) }
    }

    @Test func loraArgumentsTakeAnOptionalScale() throws {
        #expect(try LoRAAdapter.parseArgument("style.safetensors") == ("style.safetensors", 1))
        for bad in ["style.safetensors:nan", "style.safetensors:inf", "style.safetensors:3e38", "style.safetensors:-101",
                    "style.safetensors:1e400", "style.safetensors:1.2.3"] {
            #expect(throws: LoRAError.self, "\(bad)") { try LoRAAdapter.parseArgument(bad) }
        }
        #expect(throws: LoRAError.self) { try LoRAAdapter.parseArgument("") }
        #expect(try LoRAAdapter.parseArgument("style.safetensors:0.6") == ("style.safetensors", 0.6))
        #expect(try LoRAAdapter.parseArgument("/data/a:b.safetensors:-1.5") == ("/data/a:b.safetensors", -1.5))
        #expect(try LoRAAdapter.parseArgument("/data/a:b.safetensors") == ("/data/a:b.safetensors", 1))
    }

    @Test func kohyaAndDottedNamesResolve() {
        #expect(LoRANaming.target(of: "lora_unet_single_blocks_11_modulation_lin")?.parts == [.init(layer: "single_transformer_blocks.11.norm.linear", slot: .whole)])
        #expect(LoRANaming.target(of: "lora_unet_final_layer_adaLN_modulation_1")?.shiftFirstModulation == true)
        #expect(LoRANaming.target(of: "transformer.norm_out.linear")?.shiftFirstModulation == false)
        #expect(LoRANaming.target(of: "lora_transformer_transformer_blocks_3_ff_context_net_0_proj")?.parts.first?.layer == "transformer_blocks.3.ff_context.net.0.proj")
        #expect(LoRANaming.target(of: "diffusion_model.double_blocks.2.txt_attn.qkv")?.parts.map(\.layer)
                == ["attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"].map { "transformer_blocks.2.\($0)" })
        #expect(LoRANaming.target(of: "lora_te1_text_model_encoder_layers_0_mlp_fc1") == nil)
        #expect(LoRANaming.target(of: "transformer.transformer_blocks.x.attn.to_q") == nil)
    }
}
