import Foundation
import Testing
import LoRAFuse
import LoRAFuseModels
import LoRAFuseFusion
import LoRAFuseRetrieval
import LoRAFusePipeline
import LoRAFuseVerification
import LoRAFuseToyWorld

/// The bundled toy world (Examples/toyworld) against its Python references
/// (Tools/reference/make_toyworld_fixtures.py): a whole generation with a content LoRA against
/// diffusers' FluxPipeline, the scoring classifiers against PyTorch, and the trained AutoLoRA
/// merger against the gated model it was trained in; on every backend.
@Suite(.serialized) struct ToyWorldTests {
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let folder = repository.appendingPathComponent("Examples/toyworld")
    static let fixtures = repository.appendingPathComponent("Tests/Fixtures/toyworld")

    @Test func manifestListsEveryPartAndTheClassifiersKnowEveryLabel() throws {
        let world = try ToyWorld.load(folder: Self.folder.path)
        #expect(world.content.count + world.style.count >= 20)
        #expect(Set((world.content + world.style).map(\.trigger)).count == world.content.count + world.style.count)
        for path in (world.content + world.style).map(\.lora) + [world.objectClassifier, world.styleClassifier, world.merger].compactMap({ $0 }) {
            #expect(FileManager.default.fileExists(atPath: path), "\(path)")
        }
        let objects = try ImageClassifier.load(path: try #require(world.objectClassifier))
        let styles = try ImageClassifier.load(path: try #require(world.styleClassifier))
        #expect(world.content.allSatisfy { objects.classes.contains($0.label) })
        #expect(world.style.allSatisfy { styles.classes.contains($0.label) })
        #expect(world.prompt(content: world.content[0], style: world.style[1]) == "a \(world.content[0].trigger) in \(world.style[1].trigger) style")
        let pairs = world.evaluationPairs(12)
        #expect(Set(pairs.map(\.content)).count == world.content.count && pairs.allSatisfy { world.style.indices.contains($0.style) })
    }

    @Test func aMissingOrBrokenManifestIsOneClearError() throws {
        let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("toyworld-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: scratch) }
        #expect { try ToyWorld.load(folder: scratch.path) } throws: { "\($0)".contains("no world.json") }
        try Data(#"{"pipeline": "p", "width": 32, "height": 32, "steps": 0, "max_sequence_length": 8}"#.utf8)
            .write(to: scratch.appendingPathComponent("world.json"))
        #expect { try ToyWorld.load(folder: scratch.path) } throws: { "\($0)".contains("steps") }
        let concepts = #""content": [{"trigger": "a", "lora": "a", "label": "a"}], "style": [{"trigger": "b", "lora": "b", "label": "b"}]"#
        for judges in [#""judges": []"#, #""judges": [{"name": "A", "object": "o"}]"#,
                       #""judges": [{"name": "A", "object": "o", "style": "s"}, {"name": "A", "object": "o", "style": "s"}]"#] {
            try Data(#"{"pipeline": "p", "width": 32, "height": 32, "steps": 4, "max_sequence_length": 8, \#(concepts), \#(judges)}"#.utf8)
                .write(to: scratch.appendingPathComponent("world.json"))
            #expect { try ToyWorld.load(folder: scratch.path) } throws: { "\($0)".contains("`judges`") }
        }
    }

    @Test func classifiersMatchPyTorch() throws {
        let world = try ToyWorld.load(folder: Self.folder.path)
        let expected = try SafeTensorsFile(path: Self.fixtures.appendingPathComponent("classifier.safetensors").path)
        let pixels = try expected.tensor(named: "pixels")
        let (count, height, width) = (pixels.shape[0], pixels.shape[1], pixels.shape[2])
        let bytes = pixels.withUnsafeBytes { Array($0) }
        let images = (0..<count).map { Array(bytes[$0 * height * width * 3..<($0 + 1) * height * width * 3]) }
        #expect(world.judges.map(\.name) == ["A", "B"])
        #expect(world.judges.first?.object == world.objectClassifier && world.judges.first?.style == world.styleClassifier)
        for (name, path) in world.judges.flatMap({ [($0.name == "A" ? "object" : "object-\($0.name.lowercased())", $0.object),
                                                    ($0.name == "A" ? "style" : "style-\($0.name.lowercased())", $0.style)] }) {
            let classifier = try ImageClassifier.load(path: path)
            let reference = try expected.tensor(named: name).doubles()
            for backend in BackendsUnderTest.all {
                let probabilities = try classifier.classify(images: images, width: width, height: height, on: backend).flatMap { $0 }
                let error = zip(probabilities, reference).map { abs(Double($0) - $1) }.max() ?? 1
                #expect(error <= 1e-4, "\(name) \(BackendsUnderTest.label(backend)): \(error)")
            }
        }
    }

    @Test func trainedMergerGatesAsInTraining() throws {
        let expected = try SafeTensorsFile(path: Self.fixtures.appendingPathComponent("autolora.safetensors").path)
        let model = try FluxModel.load(path: Self.folder.appendingPathComponent("pipeline/transformer").path)
        let files = try JSONSerialization.jsonObject(with: Data((expected.metadata["loras"] ?? "[]").utf8)) as? [String] ?? []
        let adapters = try files.map { LoRAAdapter(file: try LoRAFile.load(path: Self.folder.appendingPathComponent($0).path, model: model), scale: 1) }
        #expect(adapters.count == 2)
        let mergers = try AutoLoRAMergers.load(path: Self.folder.appendingPathComponent("autolora-merger.safetensors").path, config: model.config)
        let transformer = FluxTransformer(model: model, autolora: try AutoLoRAFusion(mergers: mergers, adapters: adapters, config: model.config))
        var tensors: [String: HostTensor] = [:]
        for name in ["hidden_states", "encoder_hidden_states", "pooled_projections", "timestep", "img_ids", "txt_ids"] {
            tensors[name] = try expected.tensor(named: name)
        }
        let inputs = try FluxInputs(tensors, config: model.config)
        let graph = try transformer.graph(batch: 1, textLength: inputs.textLength, imageLength: inputs.imageLength)
        let reference = try expected.tensor(named: "sample").doubles()
        for backend in BackendsUnderTest.all {
            let output = try backend.execute(graph, inputs: inputs.bindings).outputs[0].floats()
            let error = relativeError(actual: output, expected: reference)
            #expect(error <= 1e-4, "\(BackendsUnderTest.label(backend)): \(error)")
        }
    }

    @Test func generationWithAContentLoRAMatchesFluxPipeline() throws {
        let world = try ToyWorld.load(folder: Self.folder.path)
        let expected = try SafeTensorsFile(path: Self.fixtures.appendingPathComponent("generate.safetensors").path)
        let meta = expected.metadata
        var settings = FluxTextToImage.Settings(prompt: meta["prompt"] ?? "", width: world.width, height: world.height, steps: world.steps)
        settings.maxSequenceLength = world.maxSequenceLength
        settings.noise = try expected.tensor(named: "noise")
        let pipeline = URL(fileURLWithPath: world.pipeline)
        settings.schedulerConfig = try FlowMatchSchedulerConfig(file: pipeline.appendingPathComponent("scheduler/scheduler_config.json"))
        let model = try FluxModel.load(path: pipeline.appendingPathComponent("transformer").path)
        let lora = LoRAAdapter(file: try LoRAFile.load(path: Self.folder.appendingPathComponent(meta["lora"] ?? "").path, model: model), scale: 1)
        let reference = try expected.tensor(named: "image").doubles()
        for backend in BackendsUnderTest.all {
            let result = try FluxTextToImage(settings: settings, backend: backend).run(
                encoders: { try FluxTextEncoders.load(pipeline: world.pipeline) }, model: model,
                transformers: { _ in ("lora", [FluxTransformer(model: model, adapters: [lora])]) },
                vae: { try VAEDecoder.load(path: pipeline.appendingPathComponent("vae").path) })
            let label = BackendsUnderTest.label(backend)
            let latentError = relativeError(actual: result.latents.floats(), expected: try expected.tensor(named: "latents").doubles())
            let close = zip(result.pixels, reference).filter { abs(Double($0) - $1) <= 1 }.count
            #expect(latentError <= 1e-3, "\(label) latents: \(latentError)")
            #expect(Double(close) >= 0.995 * Double(reference.count), "\(label) pixels: \(close)/\(reference.count)")
        }
    }

    /// The two-stage bootstrap: constant scores give a zero-width interval, the interval holds
    /// the mean and is about as wide as the normal approximation, the draws are fixed by the
    /// seed, and a method against itself differs by exactly 0.
    @Test func bootstrapIntervalsOverClustersAndSeeds() {
        let bootstrap = Bootstrap(clusters: 10, seeds: 16, resamples: 2000, seed: 3)
        #expect(bootstrap.interval(Array(repeating: Array(repeating: 0.25, count: 16), count: 10)) == .init(mean: 0.25, low: 0.25, high: 0.25))
        var random = SeededRandom(seed: 9)
        let hits = (0..<10).map { _ in (0..<16).map { _ in Double.random(in: 0..<1, using: &random) < 0.4 ? 1.0 : 0.0 } }
        let interval = bootstrap.interval(hits)
        let mean = hits.joined().reduce(0, +) / 160
        #expect(interval.mean == mean && interval.low < mean && mean < interval.high)
        let normal = 1.96 * (mean * (1 - mean) / 160).squareRoot()
        // Two stages on independent scores count the seed spread about twice: √2 × the normal half-width.
        #expect((0.9...2.0).contains((interval.high - interval.low) / 2 / normal), "\(interval) vs ±\(normal)")
        #expect(Bootstrap(clusters: 10, seeds: 16, resamples: 2000, seed: 3).interval(hits) == interval)
        #expect(bootstrap.difference(hits, hits) == .init(mean: 0, low: 0, high: 0))
        let better = hits.map { $0.map { _ in 1.0 } }
        #expect(bootstrap.difference(better, hits).excludes(0) && !bootstrap.interval(hits).excludes(mean))
        // Clusters that differ widen the interval beyond the seed-to-seed spread alone.
        let clustered = (0..<10).map { Array(repeating: $0 < 5 ? 1.0 : 0.0, count: 16) }
        let wide = bootstrap.interval(clustered)
        #expect(wide.high - wide.low > 0.4)
    }

    @Test func gridPlacesScaledCellsBetweenGaps() {
        let red: [UInt8] = [255, 0, 0, 255, 0, 0], blue: [UInt8] = [0, 0, 255, 0, 0, 255]  // 2×1 cells
        let grid = ImageGrid.compose([[red, blue]], cellWidth: 2, cellHeight: 1, scale: 2, gap: 1, background: (9, 9, 9))
        #expect(grid.width == 2 * 4 + 3 && grid.height == 2 + 2)
        func pixel(_ x: Int, _ y: Int) -> [UInt8] { Array(grid.pixels[(y * grid.width + x) * 3..<(y * grid.width + x) * 3 + 3]) }
        #expect(pixel(0, 0) == [9, 9, 9] && pixel(1, 1) == [255, 0, 0] && pixel(4, 2) == [255, 0, 0])
        #expect(pixel(5, 1) == [9, 9, 9] && pixel(6, 1) == [0, 0, 255] && pixel(9, 2) == [0, 0, 255] && pixel(10, 2) == [9, 9, 9])
        // Titles: a band above (7 rows of text + 2 gaps) and a column left as wide as the longest row title.
        let titled = ImageGrid.compose([[red, blue]], cellWidth: 2, cellHeight: 1, scale: 2, gap: 1, background: (9, 9, 9),
                                       columnTitles: ["a", "b"], rowTitles: ["+"], textScale: 1)
        #expect(titled.height == grid.height + 7 + 2 && titled.width == grid.width + 5 + 2)
        // With rows at least 7 pixels high nothing is clipped: the 5×7 glyphs of A, B and + ink 18, 20 and 9 pixels.
        let tall = ImageGrid.compose([[red, blue]], cellWidth: 2, cellHeight: 1, scale: 8, gap: 1, background: (9, 9, 9),
                                     columnTitles: ["a", "b"], rowTitles: ["+"], textScale: 1)
        let inked = stride(from: 0, to: tall.pixels.count, by: 3).filter { tall.pixels[$0..<$0 + 3].allSatisfy { $0 == 0 } }.count
        #expect(inked == 18 + 20 + 9)
    }
}
