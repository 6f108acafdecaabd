"""What a hospital plugs in: studies in from a DICOMweb archive, results out as DICOM Structured
Report, encapsulated PDF and FHIR (docs/integration.md).

- :mod:`echoprime.hospital.codes`: the coded concepts and UCUM units the outputs use.
- :mod:`echoprime.hospital.sr`: a DICOM Comprehensive SR of one interpretation (highdicom).
"""
