"""The public API says what is wrong with an argument, naming the parameter, at the call:
nothing is converted silently (`'8'` and `8.7` are not 8) and a bad output directory fails at
enable, not at the first export. These checks raise before the agent is loaded or called."""

import sys

import pytest

from conftest import PACKAGE_DIR

sys.path.insert(0, str(PACKAGE_DIR))
from vllm_profiler import VLLMPerformanceMonitor, integration  # noqa: E402
from vllm_profiler.gpu_monitor import GPUHardwareMonitor, GPUMonitor, get_gpu_monitor  # noqa: E402


@pytest.mark.parametrize("call, error, message", [
    (lambda: integration.enable_vllm_profiling(output_dir=123), TypeError,
     "output_dir must be a str or os.PathLike path, got 123 (int)"),
    (lambda: integration.enable_vllm_profiling(output_dir=""), ValueError,
     "output_dir must be a non-empty path without NUL, got ''"),
    (lambda: integration.enable_vllm_profiling(sample_interval="0.1"), TypeError,
     "sample_interval must be a number, got '0.1' (str)"),
    (lambda: integration.enable_vllm_profiling(sample_interval=float("nan")), ValueError,
     "sample_interval must be a finite number, got nan"),
    (lambda: integration.enable_vllm_profiling(auto_export_interval=True), TypeError,
     "auto_export_interval must be a number, got True (bool)"),
    (lambda: integration.enable_vllm_profiling(enable_gpu_monitoring="yes"), TypeError,
     "enable_gpu_monitoring must be a bool, got 'yes' (str)"),
    (lambda: integration.enable_vllm_profiling(enable_torch_op_profiling=2), TypeError,
     "enable_torch_op_profiling must be a bool, got 2 (int)"),
    (lambda: integration.VLLMProfilingContext(record_shapes="no"), TypeError,
     "record_shapes must be a bool, got 'no' (str)"),
    (lambda: integration.profile_vllm_function(enable_layer_profiling=None), TypeError,
     "enable_layer_profiling must be a bool, got None (NoneType)"),
    (lambda: VLLMPerformanceMonitor().profile_inference_step("8", 512), TypeError,
     "batch_size must be an int in [0, 2**32-1], got '8' (str)"),
    (lambda: VLLMPerformanceMonitor().profile_inference_step(8.7, 512), TypeError,
     "batch_size must be an int in [0, 2**32-1], got 8.7 (float)"),
    (lambda: VLLMPerformanceMonitor().profile_inference_step(True, 512), TypeError,
     "batch_size must be an int, got True (bool)"),
    (lambda: VLLMPerformanceMonitor().profile_inference_step(8, -1), ValueError,
     "num_tokens must be an int in [0, 2**32-1], got -1"),
    (lambda: VLLMPerformanceMonitor().profile_inference_step(8, 2**32), ValueError,
     "num_tokens must be an int in [0, 2**32-1], got 4294967296"),
    (lambda: VLLMPerformanceMonitor(max_history_size="x"), TypeError,
     "max_history_size must be an int in [1, 2**32-1], got 'x' (str)"),
    (lambda: VLLMPerformanceMonitor(max_history_size=0), ValueError,
     "max_history_size must be an int in [1, 2**32-1], got 0"),
    (lambda: VLLMPerformanceMonitor(output_dir=b"out"), TypeError,
     "output_dir must be a str or os.PathLike path, got b'out' (bytes)"),
    (lambda: VLLMPerformanceMonitor().get_performance_summary(-1), ValueError,
     "last_n_steps must be an int in [0, 2**32-1], got -1"),
    (lambda: VLLMPerformanceMonitor().export_performance_report(None), TypeError,
     "path must be a str or os.PathLike path, got None (NoneType)"),
    (lambda: GPUHardwareMonitor("0"), TypeError,
     "device_id must be an int in [0, 2147483647], got '0' (str)"),
    (lambda: GPUHardwareMonitor(0, sample_interval=None), TypeError,
     "sample_interval must be a number, got None (NoneType)"),
    (lambda: GPUHardwareMonitor(0, metrics_class=dict), TypeError,
     "metrics_class must be a class with a from_sample method (GPUMetrics or a subclass), "
     "got <class 'dict'>"),
    (lambda: GPUMonitor(-1), ValueError, "device_index must be an int in [0, 2147483647], got -1"),
    (lambda: get_gpu_monitor(1.0), TypeError,
     "device_index must be an int in [0, 2147483647], got 1.0 (float)"),
])
def test_a_wrong_argument_is_an_error_naming_the_parameter(call, error, message):
    with pytest.raises(error) as raised:
        call()
    assert str(raised.value) == message


def test_integer_types_that_are_ints_are_taken():
    numpy = pytest.importorskip("numpy")
    step = VLLMPerformanceMonitor().profile_inference_step(numpy.int64(8), numpy.uint32(512))
    assert (step.batch_size, step.num_tokens) == (8, 512)
    assert type(step.batch_size) is int


def test_paths_may_be_path_objects(tmp_path):
    monitor = VLLMPerformanceMonitor(output_dir=tmp_path / "out")
    assert monitor.output_dir == str(tmp_path / "out")


def test_an_output_dir_that_cannot_be_made_fails_at_enable(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ValueError) as raised:
        integration.enable_vllm_profiling(output_dir=blocker / "out")
    assert str(raised.value) == (
        f"output_dir {str(blocker / 'out')!r} cannot be made: Not a directory")
    with pytest.raises(ValueError) as raised:
        integration.enable_vllm_profiling(output_dir=blocker)
    assert str(raised.value) == f"output_dir {str(blocker)!r} is not a directory"
    with pytest.raises(ValueError) as raised:
        integration.enable_vllm_profiling(output_dir=tmp_path / ("a" * 300))
    assert str(raised.value).endswith("cannot be made: File name too long")


def test_an_output_dir_that_is_not_writable_fails_at_enable(tmp_path):
    # Root writes anywhere a mode allows (CI runs as root): /sys and /proc refuse even root,
    # which only trying tells.
    with pytest.raises(ValueError) as raised:
        integration.enable_vllm_profiling(output_dir="/sys/vllm-profiler-out")
    assert str(raised.value).startswith("output_dir '/sys/vllm-profiler-out' cannot be made: ")
    with pytest.raises(ValueError) as raised:
        integration.enable_vllm_profiling(output_dir="/proc")
    assert str(raised.value) == (
        "output_dir '/proc' is not writable: No such file or directory")


def test_a_usable_output_dir_is_made_at_enable_and_left_clean(tmp_path):
    from vllm_profiler import _checks

    assert _checks.writable_directory("output_dir", str(tmp_path / "a" / "b")) == str(
        tmp_path / "a" / "b")
    assert list((tmp_path / "a" / "b").iterdir()) == []


@pytest.mark.parametrize("value, error, message", [
    (10**400, ValueError, "sample_interval must be a finite number, got " + repr(10**400)),
])
def test_a_number_too_large_for_a_float_is_a_value_error(value, error, message):
    with pytest.raises(error) as raised:
        integration.enable_vllm_profiling(sample_interval=value)
    assert str(raised.value) == message
