import Foundation
import Testing
import LoRAFuse
import LoRAFuseModels
import LoRAFuseFusion
import LoRAFuseVerification
import LoRAFuseCPU

/// EST-LoRA against the Python reference written from the authors' code's formulas
/// (Tools/reference/make_estlora_fixtures.py, whose call counter runs in forward pre-hooks on
/// diffusers' model): the call order, per-layer energies and abs sums, γ, the choice of every
/// layer at every step of a 4-step run under both schedules, and the DiT outputs with the
/// chosen LoRAs, on every backend.
@Suite(.serialized) struct ESTLoRATests {
    static let fixtures = LoRAApplicationTests.fixtures.deletingLastPathComponent().appendingPathComponent("estlora")

    struct Reference: Decodable {
        struct Layer: Decodable {
            let content_energy: Double
            let style_energy: Double
            let content_abs_sum: Double
            let style_abs_sum: Double
        }
        struct Schedule: Decodable {
            let beta: Double
            let content_layers: [[String]]
        }
        let content: String
        let content_scale: Float
        let style: String
        let style_scale: Float
        let gamma: Double
        let alpha: Double
        let steps: Int
        let order: [String]
        let layers: [String: Layer]
        let schedules: [String: Schedule]
    }

    struct References: Decodable {
        let call_order: [String]
        let pairs: [String: Reference]
    }

    static let references: References = {
        let data = try! Data(contentsOf: fixtures.appendingPathComponent("plans.json"))
        return try! JSONDecoder().decode(References.self, from: data)
    }()
    static let pairs = references.pairs.keys.sorted()
    /// The fixture's pattern names: the code's `s*` is the periodic schedule.
    static let schedules: [(name: String, schedule: ESTLoRAPlan.Schedule, file: String)] =
        [("s*", .periodic, "sstar"), ("linear", .linear, "linear")]

    static func load(_ pair: String) throws -> (FluxModel, LoRAAdapter, LoRAAdapter, Reference) {
        let reference = references.pairs[pair]!
        let model = try FluxModel.load(path: LoRAApplicationTests.diffusersModel)
        func adapter(_ file: String, _ scale: Float) throws -> LoRAAdapter {
            LoRAAdapter(file: try LoRAFile.load(path: LoRAApplicationTests.fixtures.appendingPathComponent(file).path, model: model), scale: scale)
        }
        return (model, try adapter(reference.content, reference.content_scale), try adapter(reference.style, reference.style_scale), reference)
    }

    static func close(_ actual: Double, _ expected: Double) -> Bool { abs(actual - expected) <= 1e-5 * max(abs(expected), 1e-6) + 1e-7 }

    @Test func callOrderIsDiffusersForwardOrder() throws {
        let model = try FluxModel.load(path: LoRAApplicationTests.diffusersModel)
        #expect(model.config.linearCallOrder == Self.references.call_order)
        #expect(Set(model.config.linearCallOrder) == Set(model.config.linearLayers.map(\.name)))
    }

    @Test(arguments: pairs)
    func planMatchesTheReference(_ pair: String) throws {
        let (model, content, style, reference) = try Self.load(pair)
        for backend in BackendsUnderTest.all {
            let label = BackendsUnderTest.label(backend)
            let plan = try ESTLoRAPlanner(backend: backend, cacheFolder: nil).plan(content: content.file, style: style.file, config: model.config)
            #expect(plan.layers.map(\.name) == reference.order, "\(label)")
            #expect(Self.close(plan.gamma, reference.gamma), "\(label): γ \(plan.gamma) vs \(reference.gamma)")
            for layer in plan.layers {
                guard let expected = reference.layers[layer.name] else { continue }
                #expect(Self.close(layer.contentEnergy, expected.content_energy) && Self.close(layer.styleEnergy, expected.style_energy),
                        "\(label) \(layer.name): E_c \(layer.contentEnergy) vs \(expected.content_energy), E_s \(layer.styleEnergy) vs \(expected.style_energy)")
                #expect(Self.close(layer.contentAbsSum, expected.content_abs_sum) && Self.close(layer.styleAbsSum, expected.style_abs_sum), "\(label) \(layer.name)")
            }
            for (name, schedule, _) in Self.schedules {
                let expected = reference.schedules[name]!
                #expect(abs(schedule.defaultBeta() - expected.beta) < 1e-12)
                for step in 0..<reference.steps {
                    let chosen = plan.selection(step: step, steps: reference.steps, alpha: reference.alpha, beta: expected.beta, schedule: schedule)
                    #expect(chosen.content.intersection(reference.order) == Set(expected.content_layers[step]), "\(label) \(name) step \(step)")
                    #expect(chosen.content.union(chosen.style) == Set(content.file.modules.map(\.layer)).union(style.file.modules.map(\.layer)))
                }
            }
        }
    }

    @Test(arguments: pairs)
    func outputsMatchTheReference(_ pair: String) throws {
        let (model, content, style, reference) = try Self.load(pair)
        let folder = FluxTransformerTests.fixtures.appendingPathComponent("dev-tiny")
        let inputs = try FluxInputs(SafeTensorsFile(path: folder.appendingPathComponent("inputs.safetensors").path).allTensors(),
                                    config: model.config)
        for backend in BackendsUnderTest.all {
            let plan = try ESTLoRAPlanner(backend: backend, cacheFolder: nil).plan(content: content.file, style: style.file, config: model.config)
            for (name, schedule, file) in Self.schedules {
                let expected = try SafeTensorsFile(path: Self.fixtures.appendingPathComponent("\(pair)-\(file).safetensors").path)
                var fusion = LoRAFusion(method: .estlora, content: content, style: style)
                fusion.estlora = ESTLoRAFusion(plan: plan, content: content, style: style)
                fusion.estlora!.schedule = schedule
                fusion.estlora!.beta = reference.schedules[name]!.beta
                let fusionPlan = try FusionPlan.pair(model: model, fusion: fusion, on: backend)
                for step in 0..<reference.steps {
                    let passes = fusionPlan.step(step, of: reference.steps).passes
                    #expect(passes.count == 1)
                    let graph = try passes[0].graph(batch: inputs.batch, textLength: inputs.textLength, imageLength: inputs.imageLength)
                    let sample = try backend.execute(graph, inputs: inputs.bindings).outputs[0]
                    let error = relativeError(actual: sample.floats(), expected: try expected.tensor(named: "sample_\(step)").doubles())
                    #expect(error <= 1e-4, "\(BackendsUnderTest.label(backend)) \(name) step \(step): relative error \(error)")
                }
            }
        }
    }

    /// One LoRA as both content and style: E_c = E_s and γ = 1, so a layer is content exactly
    /// while S(t) < 1; with the linear schedule and β = 0.75, while t < 1/6, t advancing by
    /// 1/(steps·L) per fused call and wrapping to 0 at the run's last call.
    @Test func aLoRAAgainstItselfFollowsTheCallCounter() throws {
        let model = try FluxModel.load(path: LoRAApplicationTests.diffusersModel)
        let file = try LoRAFile.load(path: LoRAApplicationTests.fixtures.appendingPathComponent("all.peft.safetensors").path, model: model)
        let plan = try ESTLoRAPlanner(backend: BackendsUnderTest.all.last!, cacheFolder: nil).plan(content: file, style: file, config: model.config)
        #expect(plan.gamma == 1 && plan.layers.count == 50)
        #expect(plan.layers.map(\.name) == model.config.linearCallOrder)
        let steps = 3, total = steps * plan.layers.count
        for step in 0..<steps {
            for index in plan.layers.indices {
                let call = (step * plan.layers.count + index + 1) % total
                let expected = 1.5 * Double(call) / Double(total) + 0.75 < 1
                #expect(plan.usesContent(layer: index, step: step, steps: steps, beta: 0.75, schedule: .linear) == expected, "step \(step) layer \(index)")
            }
        }
        #expect(plan.usesContent(layer: plan.layers.count - 1, step: steps - 1, steps: steps, beta: 0.75, schedule: .linear))
        #expect(!plan.usesContent(layer: plan.layers.count - 2, step: steps - 1, steps: steps, beta: 0.75, schedule: .linear))
    }

    @Test func scheduleAndGammaFollowTheCode() {
        #expect(abs(ESTLoRAPlan.scale(progress: 0.1, alpha: 1.5, beta: 1.275, schedule: .periodic) - 1.425) < 1e-12)
        #expect(abs(ESTLoRAPlan.scale(progress: 0.2, alpha: 1.5, beta: 1.275, schedule: .periodic) - 0.075) < 1e-12)
        #expect(abs(ESTLoRAPlan.scale(progress: 0.2, alpha: 1.5, beta: 1.275, schedule: .linear) - 1.575) < 1e-12)
        // Python's %: a negative S wraps into [0, α).
        #expect(abs(ESTLoRAPlan.scale(progress: 0, alpha: 1.5, beta: -0.25, schedule: .periodic) - 1.25) < 1e-12)
        // Ratios 1, 1, 1, 10: mean 3.25, 10 ≥ 3 × 3.25 is dropped.
        #expect(ESTLoRAPlan.gamma(contentAbsSums: [1, 2, 3, 40], styleAbsSums: [1, 2, 3, 4]) == 1)
        #expect(ESTLoRAPlan.gamma(contentAbsSums: [1, 3], styleAbsSums: [1, 1]) == 2)
        #expect(ESTLoRAPlan.Schedule.periodic.defaultBeta() == 1.5 * 0.85 && ESTLoRAPlan.Schedule.linear.defaultBeta() == 0.75)
    }

    /// A run builds one set of graphs per distinct selection, and the restricted files keep
    /// their parent's weights.
    @Test func fusionPlanKeysFollowTheSelection() throws {
        let (model, content, style, _) = try Self.load("all-partial")
        let backend = CPUBackend()
        let fusion = LoRAFusion(method: .estlora, content: content, style: style)
        let plan = try FusionPlan.pair(model: model, fusion: fusion, on: backend)
        let estPlan = try ESTLoRAPlanner(backend: backend, cacheFolder: nil).plan(content: content.file, style: style.file, config: model.config)
        let steps = 12
        let keys = (0..<steps).map { plan.step($0, of: steps).key }
        let selections = (0..<steps).map { estPlan.selection(step: $0, steps: steps).content }
        #expect(Set(selections).count > 1)
        for i in 0..<steps { for j in 0..<steps { #expect((keys[i] == keys[j]) == (selections[i] == selections[j])) } }
        let sets = Set((0..<steps).flatMap { plan.step($0, of: steps).passes.flatMap { $0.adapters.map(\.file.weightSet.id) } })
        #expect(sets == [content.file.weightSet.id, style.file.weightSet.id])
    }
}
