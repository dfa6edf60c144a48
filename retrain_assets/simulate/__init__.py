from retrain_assets.simulate.traffic import FEATURES, TARGET, TrafficScenario, generate_traffic, model_config

__all__ = ["FEATURES", "TARGET", "TrafficScenario", "generate_traffic", "model_config"]
