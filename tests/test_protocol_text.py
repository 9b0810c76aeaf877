"""The report's protocol sentence, from experiment configs of the paper and the demo kind."""
from analysis.protocol import protocol_text


def test_paper_protocol_is_named():
    text = protocol_text({"data": {"test_clips": 25}, "eval": {"ten_crop": True}, "model": {"flow_scale": 20.0},
                          "fusion": {"methods": ["mean", "svm_logits"], "svm_c": [0.1, 1.0], "cv_folds": 3,
                                     "fit_on": "heldout"}})
    assert text.startswith("Evaluation protocol: 25 clips per test video × 10 crops (4 corners + centre")
    assert "flow / 20." in text
    assert ("Fusion SVMs (svm_logits): standardised inputs, fitted on the held-out validation videos"
            in text and "C chosen from [0.1, 1.0] by 3-fold cross-validation" in text)


def test_single_crop_train_fit_and_no_svm():
    text = protocol_text({"data": {"test_clips": 3}, "fusion": {"methods": ["svm_softmax"], "svm_c": 1.0,
                                                                 "fit_on": "train"}})
    assert "3 clips per test video × 1 centre crop" in text and "flow / 1." in text
    assert "fitted on every train-list video, C = 1.0." in text
    assert "Fusion" not in protocol_text({"fusion": {"methods": ["mean"]}})
