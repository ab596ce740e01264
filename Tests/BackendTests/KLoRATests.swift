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

/// K-LoRA against the Python reference written from the paper's formulas
/// (Tools/reference/make_klora_fixtures.py): per-unit statistics, γ, the choice at every
/// progress value, and the DiT output with the chosen LoRAs, on every backend.
@Suite(.serialized) struct KLoRATests {
    static let fixtures = LoRAApplicationTests.fixtures.deletingLastPathComponent().appendingPathComponent("klora")

    struct Reference: Decodable {
        struct Unit: Decodable {
            let k: Int
            let content_rank: Int
            let style_rank: Int
            let content_topk: Double
            let style_topk: Double
            let content_abs_sum: Double
            let style_abs_sum: Double
        }
        let content: String
        let content_scale: Float
        let style: String
        let style_scale: Float
        let gamma: Double
        let progress: [Double]
        let units: [String: Unit]
        let content_layers: [[String]]
    }

    static let references: [String: Reference] = {
        let data = try! Data(contentsOf: fixtures.appendingPathComponent("plans.json"))
        return try! JSONDecoder().decode([String: Reference].self, from: data)
    }()
    static let pairs = references.keys.sorted()

    static func load(_ pair: String) throws -> (FluxModel, LoRAAdapter, LoRAAdapter, Reference) {
        let reference = references[pair]!
        let model = try FluxModel.load(path: LoRAApplicationTests.diffusersModel)
        let content = LoRAAdapter(file: try LoRAFile.load(path: LoRAApplicationTests.fixtures.appendingPathComponent(reference.content).path,
                                                          model: model), scale: reference.content_scale)
        let style = LoRAAdapter(file: try LoRAFile.load(path: LoRAApplicationTests.fixtures.appendingPathComponent(reference.style).path,
                                                        model: model), scale: reference.style_scale)
        return (model, content, style, reference)
    }

    static func close(_ actual: Double, _ expected: Double) -> Bool { abs(actual - expected) <= 1e-5 * max(abs(expected), 1e-6) + 1e-7 }

    @Test(arguments: pairs)
    func planMatchesTheReference(_ pair: String) throws {
        let (model, content, style, reference) = try Self.load(pair)
        for backend in BackendsUnderTest.all {
            let plan = try KLoRAPlanner(backend: backend, cacheFolder: nil).plan(content: content.file, style: style.file, config: model.config)
            let label = BackendsUnderTest.label(backend)
            #expect(plan.units.count == reference.units.count, "\(label)")
            #expect(Self.close(plan.gamma, reference.gamma), "\(label): γ \(plan.gamma) vs \(reference.gamma)")
            for unit in plan.units {
                #expect(unit.layers.count == 1)
                guard let expected = reference.units[unit.layers[0]] else {
                    Issue.record("\(label): unit \(unit.layers) is not in the reference")
                    continue
                }
                #expect(unit.k == expected.k && unit.contentRank == expected.content_rank && unit.styleRank == expected.style_rank)
                #expect(Self.close(unit.contentTopK, expected.content_topk) && Self.close(unit.styleTopK, expected.style_topk),
                        "\(label) \(unit.layers[0]): S_c \(unit.contentTopK) vs \(expected.content_topk), S_s \(unit.styleTopK) vs \(expected.style_topk)")
                #expect(Self.close(unit.contentAbsSum, expected.content_abs_sum) && Self.close(unit.styleAbsSum, expected.style_abs_sum))
            }
            for (p, expected) in zip(reference.progress, reference.content_layers) {
                let chosen = plan.units.filter { plan.usesContent($0, progress: p) }.flatMap(\.layers)
                #expect(Set(chosen) == Set(expected), "\(label) at p = \(p)")
            }
        }
    }

    @Test(arguments: pairs)
    func outputsMatchTheReference(_ pair: String) throws {
        let (model, content, style, reference) = try Self.load(pair)
        let folder = FluxTransformerTests.fixtures.appendingPathComponent("dev-tiny")
        let inputs = try FluxInputs(SafeTensorsFile(path: folder.appendingPathComponent("inputs.safetensors").path).allTensors(),
                                    config: model.config)
        let expected = try SafeTensorsFile(path: Self.fixtures.appendingPathComponent("\(pair).safetensors").path)
        for backend in BackendsUnderTest.all {
            let plan = try KLoRAPlanner(backend: backend, cacheFolder: nil).plan(content: content.file, style: style.file, config: model.config)
            let fusion = KLoRAFusion(plan: plan, content: content, style: style)
            for (index, p) in reference.progress.enumerated() {
                let transformer = FluxTransformer(model: model, adapters: fusion.adapters(progress: p))
                let graph = try transformer.graph(batch: inputs.batch, textLength: inputs.textLength, imageLength: inputs.imageLength)
                let sample = try backend.execute(graph, inputs: inputs.bindings).outputs[0]
                let error = relativeError(actual: sample.floats(), expected: try expected.tensor(named: "sample_\(index)").doubles())
                #expect(error <= 1e-4, "\(BackendsUnderTest.label(backend)) at p = \(p): relative error \(error)")
            }
        }
    }

    /// One LoRA as both content and style: S_c = S_s and γ = 1, so every unit is content
    /// exactly while S(p) ≤ 1, i.e. p ≤ 1/3. Both files fuse q, k, v the same way, so those
    /// are single units of three layers.
    @Test func aLoRAAgainstItselfSwitchesAtOneThird() throws {
        let model = try FluxModel.load(path: LoRAApplicationTests.diffusersModel)
        let file = try LoRAFile.load(path: LoRAApplicationTests.fixtures.appendingPathComponent("all.kohya.safetensors").path, model: model)
        let plan = try KLoRAPlanner(backend: BackendsUnderTest.all.last!, cacheFolder: nil).plan(content: file, style: file, config: model.config)
        #expect(abs(plan.gamma - 1) < 1e-12)
        #expect(plan.units.contains { $0.layers == ["transformer_blocks.0.attn.to_q", "transformer_blocks.0.attn.to_k", "transformer_blocks.0.attn.to_v"] && $0.k == 144 })
        #expect(plan.units.contains { $0.layers.count == 4 && $0.layers.last == "single_transformer_blocks.1.proj_mlp" })
        #expect(plan.units.map(\.layers.count).reduce(0, +) == 50)
        for unit in plan.units {
            #expect(plan.usesContent(unit, progress: 0.33) && !plan.usesContent(unit, progress: 0.34))
            #expect(abs(plan.switchProgress(unit) - 1.0 / 3) < 1e-9)
        }
    }

    @Test func loRAsWithNoLayerInCommonAreAnError() throws {
        let model = try FluxModel.load(path: LoRAApplicationTests.diffusersModel)
        let attention = try LoRAFile.load(path: LoRAApplicationTests.fixtures.appendingPathComponent("attention.peft.safetensors").path, model: model)
        let partial = try LoRAFile.load(path: LoRAApplicationTests.fixtures.appendingPathComponent("partial.peft.safetensors").path, model: model)
            .restricted(to: ["transformer_blocks.0.ff.net.2"])
        #expect(throws: FusionError.noSharedLayers(content: attention.path, style: partial.path)) {
            try KLoRAPlanner(backend: BackendsUnderTest.all[0], cacheFolder: nil).plan(content: attention, style: partial, config: model.config)
        }
    }

    /// LoRAs for two different models (dev-tiny and dev-wide shapes) are one clear error.
    @Test func loRAsForDifferentModelsAreAnError() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("lorafuse-klora-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        var random = SeededRandom(seed: 5)
        let wide = directory.appendingPathComponent("wide.safetensors").path
        try SafeTensorsWriter.write(["transformer.transformer_blocks.0.attn.to_q.lora_A.weight": random.tensor([4, 64]),
                                     "transformer.transformer_blocks.0.attn.to_q.lora_B.weight": random.tensor([64, 4])], to: wide)
        let tiny = try LoRAFile.load(path: LoRAApplicationTests.fixtures.appendingPathComponent("all.peft.safetensors").path)
        #expect(throws: FusionError.differentModels(layer: "transformer_blocks.0.attn.to_q", content: [32, 32], style: [64, 64])) {
            try KLoRAPlanner(backend: BackendsUnderTest.all[0], cacheFolder: nil).plan(content: tiny, style: try LoRAFile.load(path: wide))
        }
    }

    /// A plan is computed once per pair of files and read back from the cache; a damaged
    /// cache entry is recomputed.
    @Test func plansAreCachedByContentHash() throws {
        let (model, content, style, _) = try Self.load("all-partial")
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("lorafuse-klora-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: folder) }
        let planner = KLoRAPlanner(backend: BackendsUnderTest.all[0], cacheFolder: folder)
        let first = try planner.plan(content: content.file, style: style.file, config: model.config)
        let entries = try FileManager.default.contentsOfDirectory(atPath: folder.path)
        #expect(entries == ["\(first.contentHash)-\(first.styleHash).json"])
        #expect(try planner.plan(content: content.file, style: style.file, config: model.config) == first)
        try Data("{".utf8).write(to: folder.appendingPathComponent(entries[0]))
        #expect(try planner.plan(content: content.file, style: style.file, config: model.config) == first)
        #expect(first.contentHash != first.styleHash)
    }
}

/// The library's fusion plan: one key per distinct layer selection, so a K-LoRA run builds
/// one graph per selection (not per step) and the LoRA factors stay resident between them.
@Suite struct FusionPlanTests {
    @Test(arguments: KLoRATests.pairs)
    func kloraKeysFollowTheLayerSelection(_ pair: String) throws {
        let (model, content, style, _) = try KLoRATests.load(pair)
        let backend = CPUBackend()
        let planner = try KLoRAPlanner(backend: backend, cacheFolder: nil).plan(content: content.file, style: style.file, config: model.config)
        var fusion = LoRAFusion(method: .klora, content: content, style: style)
        fusion.klora = KLoRAFusion(plan: planner, content: content, style: style)
        let plan = try FusionPlan.pair(model: model, fusion: fusion, on: backend)
        let steps = 40
        var keys: [FusionPlan.StepKey] = []
        var selections: [Set<String>] = []
        for step in 0..<steps {
            keys.append(plan.step(step, of: steps).key)
            selections.append(Set(planner.units.filter { planner.usesContent($0, progress: Double(step) / Double(steps)) }.flatMap(\.layers)))
        }
        #expect(Set(selections).count > 1, "the pair must switch layers during the run")
        #expect(Set(keys).count == Set(selections).count)
        for i in 0..<steps { for j in 0..<steps { #expect((keys[i] == keys[j]) == (selections[i] == selections[j])) } }
        // Restricted files share their parent's weight set: no new weights per selection.
        let sets = Set((0..<steps).flatMap { plan.step($0, of: steps).passes.flatMap { $0.adapters.map(\.file.weightSet.id) } })
        #expect(sets == [content.file.weightSet.id, style.file.weightSet.id])
    }

    /// Static plans have one key; a different scale is a different key.
    @Test func staticPlansHaveOneKey() throws {
        let (model, content, style, _) = try KLoRATests.load(KLoRATests.pairs[0])
        let backend = CPUBackend()
        let plan = try FusionPlan.plain(model: model, adapters: [content, style], on: backend)
        #expect(plan.isStatic && plan.step(0, of: 4).key == plan.step(3, of: 4).key)
        let other = try FusionPlan.plain(model: model, adapters: [content, LoRAAdapter(file: style.file, scale: style.scale * 2)], on: backend)
        #expect(other.step(0, of: 4).key != plan.step(0, of: 4).key)
    }
}
